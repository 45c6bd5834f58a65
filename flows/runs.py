"""Flow runs of `mlc-farm build` whose process is gone.

A build killed outright (SIGKILL, the OOM killer, a lost machine) cannot report its end, so Prefect would show
its run `Running` forever. Each embedded run carries tags naming its host and process; the next build on the
same host marks the runs of dead processes Crashed, their unfinished task runs too. (In farm mode the
worker that started a flow run reports its crash itself.)
"""

from __future__ import annotations

import os
import socket

from mlc_farm.processes import process_alive

EMBEDDED = "mlc-farm-embedded"
_PROCESS = "mlc-farm-process:"


def run_tags() -> list[str]:
    """The tags of this process's embedded runs: who runs them, to be checked once it may be gone."""
    return [EMBEDDED, f"{_PROCESS}{socket.gethostname()}:{os.getpid()}"]


def _dead_process(tags: list[str]) -> str | None:
    """`pid N on HOST` when the run's process was on this host and is gone; None when alive or elsewhere."""
    for tag in tags:
        if tag.startswith(_PROCESS):
            host, _, pid = tag.removeprefix(_PROCESS).rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid)):
                return f"pid {pid} on {host}"
    return None


def crash_dead_runs() -> int:
    """Mark Crashed the still-running embedded runs (and their running task runs) of processes that are gone
    from this host; how many runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    unfinished = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
                tags=FlowRunFilterTags(all_=[EMBEDDED]),
            )
        )
        crashed = 0
        for run in runs:
            if (who := _dead_process(run.tags)) is None:
                continue
            message = f"the mlc-farm build running this ({who}) was killed; the next build resumes its work"
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))),
            )
            for task_run in tasks:
                client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            crashed += 1
    return crashed
