"""The nightly, build-model and check-pool flows: the run itself is mlc_farm/building/run.py, its Prefect
engine flows/engine.py, what it says (terminal, artifacts, alert) mlc_farm/report/prefect_report.py.

Embedded mode: `mlc-farm build` runs this flow in one process with Prefect's temporary server. Farm mode
(the deployments of prefect.yaml): this flow runs on a small CPU pool and sends every build to the work
pool of its device with `run_deployment`. One failing cell never stops the others; the run ends Failed
with a table artifact naming every failure and its log.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import State
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel

from mlc_farm.building.preflight import REFUSED, Preflight, Probe, preflight
from mlc_farm.building.run import MatrixRun, Mode, Progress, RunFailed, RunResult
from mlc_farm.errors import BadInput, ToolchainUnavailable
from mlc_farm.farm.pools import idle_pools
from mlc_farm.flows.engine import PrefectEngine
from mlc_farm.report.prefect_report import PrefectReport
from mlc_farm.report.summary import CellRow
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import toolchain_path
from mlc_farm.tasks.builds import probe_toolchain
from mlc_farm.tasks.dispatch import dispatch
from mlc_farm.toolchain.info import ToolchainInfo, of_pools
from mlc_farm.toolchain.process import stop_all
from mlc_farm.trust import keys

# Threads for tasks: the scheduler starts at most MLC_FARM_PARALLEL builds in embedded mode; in farm mode each
# task only waits for a flow run on a pool, whose own limits decide how many builds run.
DISPATCHERS = 64
RUNNER: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=DISPATCHERS)


@flow(retries=0, name="nightly-build", task_runner=RUNNER, log_prints=True)
def nightly_build(
    matrix_path: str = "matrix.yaml",
    models: list[str] | None = None,
    force: bool = False,
    store: str | None = None,
    mode: Mode = "embedded",
    checked: Preflight | None = None,
) -> State:
    """Build the whole matrix (or some models): what the nightly schedule runs. `checked`: the pre-flight the
    CLI already made of these arguments (embedded mode), so it is not made twice."""
    return _stoppable(matrix_path, models, None, None, force, store, mode, checked)


@flow(retries=0, name="build-model", task_runner=RUNNER, log_prints=True)
def build_model(
    model: str,
    quantizations: list[str] | None = None,
    devices: list[str] | None = None,
    force: bool = False,
    matrix_path: str = "matrix.yaml",
    store: str | None = None,
    mode: Mode = "farm",
) -> State:
    """Build one model of the matrix (`prefect deployment run 'build-model/build-model' --param model=...`)."""
    return _stoppable(matrix_path, [model], quantizations, devices, force, store, mode)


class PoolCheckRun(BaseModel):
    """What `check_pool` returns to `mlc-farm farm check-pool`: the run's outcome and every cell's row."""

    ok: bool
    message: str
    rows: list[CellRow] = []


@flow(retries=0, name="check-pool", task_runner=RUNNER, log_prints=True)
def check_pool(matrix_path: str, store: str) -> PoolCheckRun:
    """`mlc-farm farm check-pool`: the pool-check matrix built through a nightly's deployments (farm mode), every
    build made again (`force`: the pool is what is checked, not the store), with no alert: nobody is paged for
    a check an operator is watching."""
    report = PrefectReport(alert=False)
    state = _stoppable(matrix_path, None, None, None, True, store, "farm", report=report)
    rows = report.summary.rows if report.summary else []
    return PoolCheckRun(ok=state.is_completed(), message=state.message or state.name or "", rows=rows)


def run_result(state: State) -> RunResult:
    """How a nightly or build-model run ended, from its final state (the typed result it carries; a state
    without one, such as a run crashed before it returned, reads as failed cells with its message)."""
    from prefect.exceptions import MissingResult

    try:
        found = state.result(raise_on_failure=False)
    except MissingResult:
        found = None
    if isinstance(found, RunFailed):
        return found.result
    if isinstance(found, RunResult):
        return found
    return RunResult(ok=state.is_completed(), message=state.message or state.name or "", reason="failed cells")


def _stoppable(
    matrix_path: str,
    models: list[str] | None,
    quantizations: list[str] | None,
    devices: list[str] | None,
    force: bool,
    store: str | None,
    mode: Mode,
    checked: Preflight | None = None,
    report: PrefectReport | None = None,
) -> State:
    """Wire Prefect to the run (mlc_farm/building/run.py), after its pre-flight (`checked`, else made here).
    SIGINT or SIGTERM (Prefect's TerminationSignal) while it builds: kill the toolchain steps and end the run
    Cancelled (not Crashed), saying what finished. `report`: what the run says (a nightly's alerts)."""
    from prefect.exceptions import TerminationSignal
    from prefect.states import Cancelled

    progress = Progress()
    _said_once()
    try:
        try:
            if mode == "farm":  # every worker signs with the farm's one key: none, and nothing is asked or built
                keys.require_farm_key()
            pre = checked or preflight(matrix_path, models, quantizations, devices, store, probe_for(mode))
        except (*REFUSED, BadInput) as e:
            return _failed(RunResult(ok=False, message=str(e), reason="refused"))
        engine, said = PrefectEngine(mode, force, pre), report or PrefectReport()
        done = MatrixRun(pre, engine, force, progress, get_run_logger(), said).execute()
        if done.ok:
            return Completed(message=done.message, data=done)
        return _failed(done)
    except (KeyboardInterrupt, TerminationSignal) as e:
        stop_all()
        name = "SIGINT" if isinstance(e, KeyboardInterrupt) else signal.Signals(e.signal).name
        message = (
            f"stopped by {name}: {progress.kept()} of {progress.to_run} builds finished and are kept in the "
            f"store ({progress.reused} were there already); the running toolchain steps were killed, and running "
            "the same command again finishes the rest"
        )
        get_run_logger().error(message)
        stopped = RunResult(ok=False, message=message, reason="stopped", signal=name)
        return Cancelled(message=message, data=RunFailed(stopped))


class _ReportedFailure(logging.Filter):
    """A run that ends Failed has said why (its log and state message); a worker's Prefect engine then raises
    the failed state's data and logs its own traceback of it. That record goes: the reason was said once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], RunFailed))


def _said_once() -> None:
    logger = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, _ReportedFailure) for f in logger.filters):
        logger.addFilter(_ReportedFailure())


def _failed(result: RunResult) -> State:
    """The run's Failed state, its message the reason, said in its log too: `prefect deployment run --watch`
    streams the log, then prints only the state's name."""
    from prefect.logging.handlers import APILogHandler

    get_run_logger().error(result.message)
    APILogHandler().flush()  # sent before the state: a watcher stops at the state and would miss a later log
    return Failed(message=result.message, data=RunFailed(result))


def probe_for(mode: Mode) -> Probe:
    """Embedded: this machine. Farm: every pool's image, each building (and keying) its devices' libraries
    with its own toolchain; the weights pool (`pools[0]`) is the run's."""
    if mode == "embedded":
        return lambda st, pools: probe_toolchain(pools)

    def on_pools(st: ArtifactStore, pools: list[str]) -> ToolchainInfo:
        if idle := idle_pools(pools):  # a run there would wait for ever: say so instead
            raise ToolchainUnavailable("; ".join(idle))
        futures = [dispatch.submit(f"probe-toolchain/{pool}", {"pool": pool, "store": st.url}, pool) for pool in pools]
        for f in futures:
            f.result()
        found = {
            pool: ToolchainInfo.model_validate(st.read_json(toolchain_path(pool)) or {"error": "no probe"})
            for pool in pools
        }
        return of_pools(found, pools[0])

    return on_pools


if __name__ == "__main__":
    import sys

    nightly_build(sys.argv[1] if len(sys.argv) > 1 else "matrix.yaml")
