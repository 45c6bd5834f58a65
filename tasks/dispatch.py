"""Farm mode: run one build as a flow run of its pool's deployment, and wait for it."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.runtime import flow_run

from mlc_farm.errors import BuildFailed
from mlc_farm.records.outcomes import Built
from mlc_farm.records.reads import load_record
from mlc_farm.store import open_store


@task(retries=0, name="dispatch", task_run_name="{deployment} {key:.12}")
def dispatch(deployment: str, parameters: dict[str, Any], key: str, store_url: str | None = None) -> Built:
    """Start `deployment` with `parameters` and wait; the idempotency key makes a retried dispatch reuse
    the flow run it already started instead of building twice. Built by another run: the key's record names
    another flow run than the one started here (it waited for that run's lease); without `store_url` (a probe)
    nothing is read."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # a FlowRun when called from sync code
        deployment,
        parameters=parameters,
        timeout=None,
        poll_interval=2,
        idempotency_key=f"{flow_run.get_id()}-{deployment}-{key}",
    )
    state = run.state
    if state is None or not state.is_completed():
        name = state.name if state else "unknown"
        raise BuildFailed(f"{deployment} flow run {run.name} ended {name}: {state.message if state else ''}", None)
    record = load_record(open_store(store_url), key) if store_url else None
    return Built(key=key, by_another_run=record is not None and record.flow_run != str(run.id))
