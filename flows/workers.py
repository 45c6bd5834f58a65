"""The flows that run on the work pools in farm mode: one weight build, one library build, a toolchain probe.

Each writes its result to the store (the channel between the dispatcher and the workers), so the
dispatcher needs no result storage shared with the workers.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from pydantic import Field

from mlc_farm.building import runners
from mlc_farm.building.runners import Given
from mlc_farm.farm.pools import COMPILE_SLOT_LEASE, compile_limit
from mlc_farm.planning import sources
from mlc_farm.planning.kinds import DeviceBuild, WeightsBuild, kind_of
from mlc_farm.planning.plan import ModelBuilds
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.store import open_store
from mlc_farm.store.layout import toolchain_path
from mlc_farm.tasks.builds import log_line
from mlc_farm.toolchain.probe import probe
from mlc_farm.trust import keys


@flow(retries=0, name="probe-toolchain", flow_run_name="probe toolchain on {pool}")
def probe_toolchain_flow(pool: str, store: str | None = None) -> None:
    open_store(store).write_json(toolchain_path(pool), probe().model_dump())


def _weights_run_name() -> str:
    """`convert tiny/q4f16_1`, `config tiny/q4f16_1`, `reference tiny`."""
    b = flow_run.parameters["build"]
    fields = b if isinstance(b, dict) else b.model_dump()
    quantization = fields.get("quantization")
    return f"{fields['kind']} {fields['model']}" + (f"/{quantization}" if quantization else "")


@flow(retries=0, name="build-weights", flow_run_name=_weights_run_name)
def build_weights_flow(
    build: Annotated[WeightsBuild, Field(discriminator="kind")],
    source: ResolvedSource,
    convert_device: str,
    store: str | None = None,
    force: bool = False,
) -> str:
    """A convert, config or fidelity reference build, on the weights pool (CPU is enough with convert_device:
    cpu): each reads the source."""
    keys.require_farm_key()  # a worker never signs with a key of its own
    run = str(flow_run.get_id())
    given = Given(
        files=sources.fetch(source), convert_device=convert_device, on_line=log_line, flow_run=run, force=force
    )
    return runners.run(open_store(store), build, given).key


@flow(retries=0, name="build-library", flow_run_name="{lb.kind} {lb.device.name}/{lb.quantization}")
def build_library_flow(
    lb: Annotated[DeviceBuild, Field(discriminator="kind")],
    builds_from: ModelBuilds,
    store: str | None = None,
    force: bool = False,
) -> str:
    """A library build, or a cell's check (run and fidelity), on the device's pool; a kind that compiles holds
    one of the pool's compile slots while it runs."""
    keys.require_farm_key()
    run, st = str(flow_run.get_id()), open_store(store)
    given = Given(builds=builds_from, on_line=log_line, flow_run=run, force=force)
    if not kind_of(lb).compiles:
        return runners.run(st, lb, given).key
    with concurrency(compile_limit(lb.device.work_pool), occupy=1, lease_duration=COMPILE_SLOT_LEASE.total_seconds()):
        return runners.run(st, lb, given).key
