"""The nightly build, wired to Prefect: the run itself is mlc_farm/building/run.py; this module gives it Prefect's
tasks, flow runs on work pools, and artifacts.

Embedded mode: `mlc-farm build` runs this flow in one process with Prefect's temporary server. Farm mode
(the deployments of prefect.yaml): this flow runs on a small CPU pool and sends every build to the work
pool of its device with `run_deployment`. One failing cell never stops the others; the run ends Failed
with a table artifact naming every failure and its log.
"""

from __future__ import annotations

import signal
from typing import Any, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture, wait
from prefect.runtime import flow_run as runtime_flow_run
from prefect.states import Completed, Failed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from mlc_farm.building.preflight import REFUSED, Preflight, Probe, preflight
from mlc_farm.building.run import MatrixRun, Mode, Progress, RunFailed, RunResult
from mlc_farm.catalog.update import UnitResult
from mlc_farm.distribute.hub import PublishResult
from mlc_farm.errors import BadInput, ToolchainUnavailable
from mlc_farm.farm.pools import idle_pools
from mlc_farm.matrix.schema import LoadedMatrix, ModelSpec
from mlc_farm.orchestrate.build_tasks import (
    build_from_source,
    build_library,
    build_reference,
    check_cell,
    conversion_fingerprints,
    probe_toolchain,
    resolve_sources,
    update_catalog,
    write_catalog_page,
)
from mlc_farm.orchestrate.dispatch import dispatch
from mlc_farm.orchestrate.publish_task import publish_unit
from mlc_farm.planning.fingerprints import Fingerprint
from mlc_farm.planning.plan import CheckBuild, LibBuild, ModelBuilds, Plan, ReferenceBuild
from mlc_farm.planning.schedule import Build
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.schema import BuildRecord
from mlc_farm.report import alerts
from mlc_farm.report.night import NightReport
from mlc_farm.report.summary import BY_ANOTHER_RUN, Built, CellRow, Outcome, Summary
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import toolchain_path
from mlc_farm.toolchain.info import ToolchainInfo, of_pools
from mlc_farm.toolchain.process import stop_all
from mlc_farm.trust import keys

# Threads for tasks: the scheduler starts at most MLC_FARM_PARALLEL builds in embedded mode; in farm mode each
# task only waits for a flow run on a pool, whose own limits decide how many builds run.
DISPATCHERS = 64
GRID_CELLS = 500  # a bigger matrix's picture shows its cells that are not OK; the summary table has every cell
RUNNER: TaskRunner[Any] = ThreadPoolTaskRunner(max_workers=DISPATCHERS)
T = TypeVar("T")


def _as_is(value: T) -> T:
    """A big task argument that Prefect passes as it is: without quote() it walks every nested value looking
    for futures, which took seconds per task at thousands of cells."""
    return cast(T, quote(value))


def _outcome(future: PrefectFuture[Any]) -> Outcome:
    future.wait()
    state = future.state
    if state.is_completed():
        built = state.result()
        waited = isinstance(built, Built) and built.by_another_run
        return Outcome(status=BY_ANOTHER_RUN if waited else "built", log=None)
    try:
        state.result()
    except Exception as e:
        return Outcome(status="failed", detail=str(e), log=getattr(e, "log", None))
    return Outcome(status="failed", detail=state.message or state.name or "failed")


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
    return _stoppable(matrix_path, models, None, None, force, store, mode, checked)[0]


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
    return _stoppable(matrix_path, [model], quantizations, devices, force, store, mode)[0]


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
    state, engine = _stoppable(matrix_path, None, None, None, True, store, "farm", alert=False)
    rows = engine.summary.rows if engine and engine.summary else []
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
    alert: bool = True,
) -> tuple[State, PrefectEngine | None]:
    """Wire Prefect to the run (mlc_farm/building/run.py), after its pre-flight (`checked`, else made here).
    SIGINT or SIGTERM (Prefect's TerminationSignal) while it builds: kill the toolchain steps and end the run
    Cancelled (not Crashed), saying what finished. The engine it ran with, if it got that far."""
    from prefect.exceptions import TerminationSignal
    from prefect.states import Cancelled

    progress, engine = Progress(), None
    try:
        try:
            if mode == "farm":  # every worker signs with the farm's one key: none, and nothing is asked or built
                keys.require_farm_key()
            pre = checked or preflight(matrix_path, models, quantizations, devices, store, probe_for(mode))
        except (*REFUSED, BadInput) as e:
            return Failed(message=str(e), data=RunFailed(RunResult(ok=False, message=str(e), reason="refused"))), None
        engine = PrefectEngine(mode, force, pre, alert)
        done = MatrixRun(pre, engine, force, progress, get_run_logger()).execute()
        if done.ok:
            return Completed(message=done.message, data=done), engine
        return Failed(message=done.message, data=RunFailed(done)), engine
    except (KeyboardInterrupt, TerminationSignal) as e:
        stop_all()
        name = "SIGINT" if isinstance(e, KeyboardInterrupt) else signal.Signals(e.signal).name
        message = (
            f"stopped by {name}: {progress.kept()} of {progress.to_run} builds finished and are kept in the "
            f"store ({progress.reused} were there already); the running toolchain steps were killed, and running "
            "the same command again finishes the rest"
        )
        stopped = RunResult(ok=False, message=message, reason="stopped", signal=name)
        return Cancelled(message=message, data=RunFailed(stopped)), engine


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


class PrefectEngine:
    """The run's orchestrator: tasks in this process (embedded), or flow runs on each device's work pool
    through `run_deployment` (farm); Prefect artifacts for the summary, the matrix, the night and publishing."""

    def __init__(self, mode: Mode, force: bool, pre: Preflight, alert: bool = True):
        self.mode, self.force, self.alert = mode, force, alert
        self.store_url = pre.store_url
        self.convert_device, self.weights_pool = pre.matrix.convert_device, pre.matrix.weights_pool
        self.summary: Summary | None = None

    def resolve(self, loaded: LoadedMatrix, models: list[ModelSpec]) -> dict[str, ResolvedSource]:
        return resolve_sources(_as_is(loaded), _as_is(models))

    def fingerprints(self, toolchain: ToolchainInfo, classes: dict[str, dict[str, Any]]) -> dict[str, Fingerprint]:
        """Twins convert in seconds on a CPU: here, with this process's toolchain, when it is the run's (farm
        mode: the image of the pool the nightly runs on); otherwise none, and convert keys hold the version."""
        return conversion_fingerprints(self.store_url, _as_is(toolchain), _as_is(classes))

    def start(self, build: Build, builds: ModelBuilds | None, source: ResolvedSource | None) -> PrefectFuture[Any]:
        """Embedded: a task here. Farm: a flow run on the build's pool (the device's, else the weights pool)."""
        if self.mode == "embedded":
            if isinstance(build, LibBuild):
                assert builds is not None
                return build_library.submit(self.store_url, build, builds, self.force)
            if isinstance(build, CheckBuild):
                return check_cell.submit(self.store_url, build, self.force)
            assert source is not None
            if isinstance(build, ReferenceBuild):
                return build_reference.submit(self.store_url, build, source, self.force)
            return build_from_source.submit(self.store_url, build, source, self.convert_device, self.force)
        if isinstance(build, LibBuild | CheckBuild):
            params: dict[str, Any] = {"lb": build, "builds_from": builds, "store": self.store_url, "force": self.force}
            return dispatch.submit(
                f"build-library/{build.device.work_pool}", _jsonable(params), build.key, self.store_url
            )
        params = {
            "build": build,
            "source": source,
            "convert_device": self.convert_device,
            "store": self.store_url,
            "force": self.force,
        }
        return dispatch.submit(f"build-weights/{self.weights_pool}", _jsonable(params), build.key, self.store_url)

    def finished(self, handles: list[Any], timeout: float) -> list[Any]:
        return list(wait(handles, timeout=timeout).done)

    def outcome(self, handle: Any) -> Outcome:
        return _outcome(handle)

    def slots(self, pools: set[str]) -> dict[str, int | None]:
        """Each work pool's concurrency limit in Prefect (None: no limit)."""
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return {pool: client.read_work_pool(pool).concurrency_limit for pool in pools}

    def update_catalog(
        self, plan: Plan, sources: dict[str, ResolvedSource], records: dict[str, BuildRecord]
    ) -> list[UnitResult]:
        return update_catalog(self.store_url, _as_is(plan), _as_is(sources), _as_is(records))

    def publish(self, units: list[tuple[str, str, str, bool | None]]) -> list[tuple[str, PublishResult | Exception]]:
        """MLC_FARM_PARALLEL at a time, in matrix order: repos that share a library then mostly find it already
        uploaded by an earlier one."""
        results: list[tuple[str, PublishResult | Exception]] = []
        limit = load_settings().parallel
        for first in range(0, len(units), limit):
            wave = [
                (repo, publish_unit.submit(self.store_url, m, q, repo, private))
                for m, q, repo, private in units[first : first + limit]
            ]
            for repo, future in wave:
                future.wait()
                try:
                    results.append((repo, future.result()))
                except Exception as e:
                    results.append((repo, e))
        return results

    def write_page(self) -> None:
        write_catalog_page(self.store_url)

    def artifacts(self, summary: Summary, night: NightReport, published: list[dict[str, str]]) -> None:
        self.summary = summary
        big = summary.for_console(GRID_CELLS) is not summary.rows
        create_markdown_artifact(
            key="mlc-farm-matrix",
            markdown=summary.grid(summary.failed if big else None),
            description=f"The {'cells that are not OK' if big else 'matrix'} of this run (every cell: "
            "mlc-farm-build-summary).",
        )
        table = create_table_artifact(
            key="mlc-farm-build-summary",
            table=[r.model_dump() for r in summary.rows],
            description="Every cell of the matrix: built, reused or failed, and where its log is.\n\n"
            + night.markdown(),
        )
        create_markdown_artifact(key="mlc-farm-night", markdown=night.markdown(), description="How the night went.")
        if summary.regressions:
            create_markdown_artifact(
                key="mlc-farm-regressions",
                markdown="\n".join(f"- {line}" for line in summary.regressions),
                description="Cells slower, further from their source or bigger than under the previous toolchain.",
            )
        if published:
            create_table_artifact(
                key="mlc-farm-publish", table=published, description="Hugging Face repos of this run."
            )
        if self.alert:
            alerts.emit(alerts.outcome(summary, _artifact_link(table)), runtime_flow_run.id)


def _artifact_link(artifact: Any) -> str:
    """Where a person opens an artifact: the UI's page when PREFECT_UI_URL is set, else its id and key."""
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{ui}/artifacts/artifact/{artifact}" if ui else f"artifact {artifact} (mlc-farm-build-summary)"


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in params.items()}


if __name__ == "__main__":
    import sys

    nightly_build(sys.argv[1] if len(sys.argv) > 1 else "matrix.yaml")
