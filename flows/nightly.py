"""The nightly build: matrix -> plan -> only the builds whose key has no record -> store -> catalog.

Embedded mode: `mlc-farm build` runs this flow in one process with Prefect's temporary server. Farm mode
(the deployments of prefect.yaml): this flow runs on a small CPU pool and sends every build to the work
pool of its device with `run_deployment`. One failing cell never stops the others; the run ends Failed
with a table artifact naming every failure and its log.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, TypeVar, cast

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture, wait
from prefect.states import Completed, Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from mlc_farm import terminal
from mlc_farm import toolchain as toolchain_steps
from mlc_farm.build import remove_stale_workdirs
from mlc_farm.catalog import BuildRecord, all_records, load_failure, load_record, now, referenced_blobs
from mlc_farm.durations import estimate
from mlc_farm.errors import MatrixError, PublishError
from mlc_farm.formatting import clock
from mlc_farm.hub import repo_for
from mlc_farm.matrix import BUILTIN_NAMES, load_matrix, select_cells, toolchain_problems
from mlc_farm.night import NightReport, night_report
from mlc_farm.plan import LibBuild, ModelBuilds, Plan, make_plan
from mlc_farm.schedule import Build, Scheduler, to_build
from mlc_farm.settings import load_settings
from mlc_farm.status import RunStatus, StatusDisplay
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.store.layout import BLOBS, blob_url, toolchain_path
from mlc_farm.summary import BY_ANOTHER_RUN, DONE, Outcome, Summary, summarize
from mlc_farm.tasks.build import (
    build_from_source,
    build_library,
    probe_toolchain,
    resolve_sources,
    update_catalog,
    write_catalog_page,
)
from mlc_farm.tasks.dispatch import dispatch
from mlc_farm.tasks.publish import publish_unit
from mlc_farm.toolchain import SNAPSHOT_POOL, ToolchainInfo

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


def _usable(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.status in DONE


def _outcome(future: PrefectFuture) -> Outcome:
    future.wait()
    state = future.state
    if state.is_completed():
        waited = str(state.result()).endswith(BY_ANOTHER_RUN)
        return Outcome(status=BY_ANOTHER_RUN if waited else "built", log=None)
    try:
        state.result()
    except Exception as e:
        return Outcome(status="failed", detail=str(e), log=getattr(e, "log", None))
    return Outcome(status="failed", detail=state.message or state.name or "failed")


Mode = Literal["embedded", "farm"]


@flow(retries=0, name="nightly-build", task_runner=RUNNER, log_prints=True)
def nightly_build(
    matrix_path: str = "matrix.yaml",
    models: list[str] | None = None,
    force: bool = False,
    store: str | None = None,
    mode: Mode = "embedded",
) -> State:
    """Build the whole matrix (or some models): what the nightly schedule runs."""
    return _stoppable(lambda done: run_matrix(matrix_path, models, None, None, force, store, mode, done))


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
    return _stoppable(lambda done: run_matrix(matrix_path, [model], quantizations, devices, force, store, mode, done))


@dataclasses.dataclass
class Progress:
    """What a run has done so far: enough to say, when it is stopped, what is kept and what is left."""

    to_run: int = 0
    reused: int = 0
    finished: dict[str, Outcome] = dataclasses.field(default_factory=dict)


HUB_UNREACHABLE = "the Hugging Face Hub could not be reached to resolve the sources"


def hub_unreachable(state: State) -> bool:
    """A run that failed only because the Hub did not answer (offline, 5xx) while resolving its sources."""
    return HUB_UNREACHABLE in (state.message or "")


def stopped_by(state: State) -> signal.Signals | None:
    """The signal that stopped a run ended Cancelled by `_stoppable` (its message begins `stopped by SIGxxx:`)."""
    if not state.is_cancelled() or not (state.message or "").startswith("stopped by SIG"):
        return None
    return signal.Signals[state.message.split()[2].rstrip(":")]  # type: ignore[union-attr]


def _stoppable(run: Callable[[Progress], State]) -> State:
    """SIGINT or SIGTERM (Prefect's TerminationSignal) while the run builds: kill the toolchain steps and end
    the run Cancelled (not Crashed), saying what finished and how to resume."""
    from prefect.exceptions import TerminationSignal
    from prefect.states import Cancelled

    progress = Progress()
    try:
        return run(progress)
    except (KeyboardInterrupt, TerminationSignal) as e:
        toolchain_steps.stop_all()
        name = "SIGINT" if isinstance(e, KeyboardInterrupt) else signal.Signals(e.signal).name
        kept = sum(_usable(o) for o in progress.finished.values())
        return Cancelled(
            message=f"stopped by {name}: {kept} of {progress.to_run} builds finished and are kept in the store "
            f"({progress.reused} were there already); the running toolchain steps were killed, and running the "
            "same command again finishes the rest"
        )


def run_matrix(
    matrix_path: str,
    models: list[str] | None,
    quantizations: list[str] | None,
    devices: list[str] | None,
    force: bool,
    store: str | None,
    mode: Mode,
    progress: Progress,
) -> State:
    """The one code path of both modes; `mode` decides only where each build runs (this process, or the
    work pool of its device through `run_deployment`)."""
    logger = get_run_logger()
    toolchain_steps.accept_steps()
    began = now()
    loaded = load_matrix(matrix_path)
    matrix = loaded.matrix
    cells = select_cells(matrix, loaded.file, models, quantizations, devices)
    try:
        targets = {(c.model, c.quantization): repo_for(matrix, c.model, c.quantization) for c in cells}
    except PublishError as e:
        return Failed(message=str(e))
    st = open_store(store)
    pools = sorted({matrix.weights_pool} | {matrix.device(c.device).work_pool for c in cells})
    toolchain = probe_toolchain() if mode == "embedded" else _farm_toolchain(st, pools)
    if not toolchain.known:
        return Failed(message=f"toolchain unavailable: {toolchain.error}")
    logger.info("toolchain: %s", toolchain.describe())
    if mode == "embedded":  # farm pools keep theirs: `plan` without a toolchain checks names against it
        st.write_json(toolchain_path(SNAPSHOT_POOL), toolchain.model_dump())
    accepted = toolchain.names or BUILTIN_NAMES
    if problems := toolchain_problems(matrix, accepted):
        return Failed(message=str(MatrixError(loaded.file, [*problems, f"(names checked against {accepted.source})"])))
    wanted = {c.model for c in cells}
    srcs = resolve_sources(_as_is(loaded), _as_is([m for m in matrix.models if m.id in wanted]))
    plan = make_plan(matrix, cells, srcs, toolchain)
    # Uploads begun this long ago belong to runs that died: a live run finishes a blob well within it.
    stale = st.abort_stale_uploads(timedelta(hours=load_settings().stale_upload_hours))
    if stale:
        logger.info("aborted %d unfinished uploads left by earlier runs", len(stale))
    if mode == "embedded" and (left := remove_stale_workdirs()):
        logger.info("removed %d work directories that killed builds left behind", len(left))

    records: dict[str, BuildRecord] = {}  # read once: on S3 each look-up is a GET

    blobs_lock = threading.Lock()

    @functools.cache
    def listed_blobs() -> frozenset[str]:
        return frozenset(name.rsplit("/", 1)[-1] for name in st.names(BLOBS))

    def stored_blobs() -> frozenset[str]:
        """Every blob in the store, listed once when first needed (one LIST per 1,000 blobs on S3)."""
        with blobs_lock:
            return listed_blobs()

    def have(key: str) -> bool:
        """A build is reused only when its record reads and every blob it points at is there."""
        record = load_record(st, key)
        if record is None:
            return False
        if missing := [f.path for f in referenced_blobs(record) if f.sha256 not in stored_blobs()]:
            logger.warning(
                "build %s points at %d missing blobs (%s): rebuilding it", key[:12], len(missing), missing[0]
            )
            return False
        records[key] = record
        return True

    def start(build: Build, builds: ModelBuilds | None) -> PrefectFuture:
        if isinstance(build, LibBuild):
            assert builds is not None
            if mode == "embedded":
                return build_library.submit(st.url, build, builds, force)
            params = {"lb": build, "builds_from": builds, "store": st.url, "force": force}
            return dispatch.submit(f"build-library/{build.device.work_pool}", _jsonable(params), build.key)
        source = srcs[build.model]
        if mode == "embedded":
            return build_from_source.submit(st.url, build, source, matrix.convert_device, force)
        params = {
            "build": build,
            "source": source,
            "convert_device": matrix.convert_device,
            "store": st.url,
            "force": force,
        }
        return dispatch.submit(f"build-weights/{matrix.weights_pool}", _jsonable(params), build.key)

    todo = to_build(plan, have, force)
    outcomes: dict[str, Outcome] = {k: Outcome(status="reused") for k in plan.all_keys() if k not in todo}
    scheduler = _scheduler(plan, todo, st, srcs, mode, matrix.weights_pool)
    labels = _labels(plan)
    progress.to_run, progress.reused = len(todo), len(outcomes)
    console = terminal.console()
    console.print(f"{len(todo)} builds to run, {len(outcomes)} reused", soft_wrap=True)
    status = _run(scheduler, start, todo, labels, console, progress.finished)
    outcomes |= progress.finished
    for lb in scheduler.never_started():
        outcomes[lb.key] = Outcome(status="not run", detail="none of its models' convert and config builds succeeded")
    for key, o in outcomes.items():
        if o.status in DONE:
            record = records.get(key) or load_record(st, key)
            if record:
                records[key] = record
                o.log = blob_url(st.url, record.log.sha256) if record.log else None
                o.validation = record.validation.describe() if record.validation else ""
        elif o.status == "failed" and not o.log and (failure := load_failure(st, key)) and failure.failed_at >= began:
            # Farm mode: the worker wrote what failed; the dispatcher only saw its flow run end Failed.
            o.log, o.detail = (blob_url(st.url, failure.log.sha256) if failure.log else None), failure.error
    units = update_catalog(st.url, _as_is(plan), _as_is(srcs), _as_is(records))

    summary = summarize(plan, outcomes, units)
    builds: dict[str, Build] = {**plan.convert_builds, **plan.config_builds, **plan.lib_builds}
    pool_of = {key: scheduler.pool_of(b) for key, b in builds.items()}
    night = night_report(plan, status.spans, pool_of, scheduler.slots, labels, status.now() - status.started)
    _report(summary, night)
    failed = summary.failed
    message = summary.message()
    failed_units = {(r.model, r.quantization) for r in failed} | {
        (u.model, u.quantization) for u in units if u.status in ("kept previous", "not built", "damaged")
    }
    damaged = [u for u in units if u.status == "damaged"]
    for u in damaged:
        logger.error("%s %s: %s", u.model, u.quantization, u.detail)
    publish_failures = _publish(targets, st.url, failed_units)
    write_catalog_page(st.url)  # after publishing: its links go to the Hub repos that hold these builds
    if publish_failures:
        message += f"; {publish_failures} publish failed"
    if failed and all(r.status == "unresolved" and srcs[r.model].unreachable for r in failed):
        message = f"{HUB_UNREACHABLE}; {message}"  # a service, not the input: exit 3, and a later run may do
    if failed or publish_failures or damaged:
        failures = f"; failed: {summary.failures()}" if failed else ""
        return Failed(message=f"{len(failed)} of {len(summary.rows)} cells failed; {message}{failures}")
    return Completed(message=message)  # every cell is in the artifacts; as data, Prefect would walk it all


def _run(
    scheduler: Scheduler,
    start: Callable[[Build, ModelBuilds | None], PrefectFuture],
    todo: set[str],
    labels: dict[str, str],
    console: Console,
    outcomes: dict[str, Outcome],
) -> RunStatus:
    """Start what the scheduler allows, a line per finished build (into `outcomes`) and a live status of the
    running ones, until nothing runs; returns the status, with when each build ran."""
    status = RunStatus(labels, len(todo))
    running: dict[PrefectFuture, str] = {}

    def start_allowed() -> None:
        for build, builds in scheduler.starts():
            running[start(build, builds)] = build.key
            status.start(build.key)

    with StatusDisplay(console, status, load_settings().status_seconds) as display:
        start_allowed()
        while running:
            display.tick()
            for future in wait(list(running), timeout=1).done:
                key = running.pop(future)
                outcomes[key] = _outcome(future)
                ok = _usable(outcomes[key])
                scheduler.finish(key, ok)
                status.finish(key, ok)
                start_allowed()
                mark = ("ok", "green") if ok else ("FAILED", "red")
                took = clock(status.now() - status.started)
                display.print(Text.assemble(f"[{len(outcomes)}/{len(todo)}] ", mark, f" {labels[key]} (at {took})"))
    return status


def _scheduler(plan: Plan, todo: set[str], st: ArtifactStore, srcs: dict, mode: Mode, weights_pool: str) -> Scheduler:
    """Critical-path order from the durations of earlier builds. Embedded: one pool of MLC_FARM_PARALLEL
    slots. Farm: each build on its pool, as many at once as the pool's concurrency limit in Prefect."""
    durations = estimate(plan, [r for _, r in all_records(st)], {m: s.config for m, s in srcs.items()}) if todo else {}
    if mode == "embedded":
        return Scheduler(plan, todo, {"local": load_settings().parallel}, durations=durations)
    builds: list[Build] = [*plan.convert_builds.values(), *plan.config_builds.values(), *plan.lib_builds.values()]
    pools = {b.key: b.device.work_pool if isinstance(b, LibBuild) else weights_pool for b in builds}
    return Scheduler(plan, todo, _pool_slots(set(pools.values())), lambda b: pools[b.key], durations)


def _pool_slots(pools: set[str]) -> dict[str, int | None]:
    """Each work pool's concurrency limit in Prefect (None: no limit)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {pool: client.read_work_pool(pool).concurrency_limit for pool in pools}


def _labels(plan: Plan) -> dict[str, str]:
    """A short name per build for progress lines: `convert tiny-llama-a/q4f16_1`, `library cpu/q4f16_1`."""
    return {
        **{k: f"convert {b.model}/{b.quantization}" for k, b in plan.convert_builds.items()},
        **{k: f"config {b.model}/{b.quantization}" for k, b in plan.config_builds.items()},
        **{k: f"library {b.device.name}/{b.quantization} ({b.key[:12]})" for k, b in plan.lib_builds.items()},
    }


def _farm_toolchain(st: ArtifactStore, pools: list[str]) -> ToolchainInfo:
    """Probe every pool where it runs; they must agree, since weights and libraries must match."""
    futures = [dispatch.submit(f"probe-toolchain/{pool}", {"pool": pool, "store": st.url}, pool) for pool in pools]
    for f in futures:
        f.result()
    found = {
        pool: ToolchainInfo.model_validate(st.read_json(toolchain_path(pool)) or {"error": "no probe"})
        for pool in pools
    }
    if len(set(found.values())) > 1:
        seen = "; ".join(f"{pool}: {tc.describe()}" for pool, tc in found.items())
        return ToolchainInfo(
            error=f"the pools run different toolchains ({seen}): build every image from one MLC nightly"
        )
    return found[pools[0]]


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in params.items()}


def _publish(
    targets: dict[tuple[str, str], tuple[str, bool | None] | None], store_url: str, failed_units: set[tuple[str, str]]
) -> int:
    """Publish every model x quantization whose cells all succeeded (a partial set would delete libraries
    from the Hub), MLC_FARM_PARALLEL at a time and in matrix order: repos that share a library then mostly
    find it already uploaded by an earlier one. Returns how many failed."""
    units = [(model, quant, target) for (model, quant), target in targets.items() if target]
    units = [u for u in units if (u[0], u[1]) not in failed_units]
    if not units:
        return 0
    rows, failures = [], 0
    console = terminal.console()
    limit = load_settings().parallel
    for start in range(0, len(units), limit):
        wave = {
            target[0]: publish_unit.submit(store_url, m, q, *target) for m, q, target in units[start : start + limit]
        }
        for repo, future in wave.items():
            future.wait()
            try:
                result = future.result()
            except Exception as e:
                failures += 1
                rows.append({"repo": repo, "result": "failed", "detail": str(e)})
                console.print(Text.assemble(("PUBLISH FAILED", "red"), f" {repo}: {e}"), soft_wrap=True)
                continue
            done = f"commit {result.commit}" if result.commit else "unchanged, no commit"
            detail = f"{len(result.operations)} operations, {result.unchanged} files unchanged"
            rows.append({"repo": repo, "result": done, "detail": detail})
            console.print(f"published {repo}: {done} ({detail})", soft_wrap=True, highlight=False)
    create_table_artifact(key="mlc-farm-publish", table=rows, description="Hugging Face repos of this run.")
    return failures


def _report(summary: Summary, night: NightReport) -> None:
    big = summary.for_console(GRID_CELLS) is not summary.rows
    create_markdown_artifact(
        key="mlc-farm-matrix",
        markdown=summary.grid(summary.failed if big else None),
        description=f"The {'cells that are not OK' if big else 'matrix'} of this run (every cell: mlc-farm-build-summary).",
    )
    create_table_artifact(
        key="mlc-farm-build-summary",
        table=[r.model_dump() for r in summary.rows],
        description="Every cell of the matrix: built, reused or failed, and where its log is.\n\n" + night.markdown(),
    )
    create_markdown_artifact(key="mlc-farm-night", markdown=night.markdown(), description="How the night went.")
    console = terminal.console()  # the terminal's width; never wrapped when not a terminal
    shown = summary.for_console()
    if shown:
        console.print(summary.table(shown))
    if hidden := len(summary.rows) - len(shown):
        console.print(
            f"{hidden} ok cells not listed; every cell is in the run's mlc-farm-build-summary artifact", soft_wrap=True
        )
    if night.pools:
        console.print(night.line(), soft_wrap=True, markup=False)
    for r in summary.failed:
        console.print(
            Text.assemble(
                ("FAILED", "red"),
                f" {r.model}/{r.quantization}/{r.device}: {r.detail}" + (f"\n  log: {r.log}" if r.log else ""),
            ),
            soft_wrap=True,
        )


if __name__ == "__main__":
    import sys

    nightly_build(sys.argv[1] if len(sys.argv) > 1 else "matrix.yaml")
