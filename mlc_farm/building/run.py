"""One run of a matrix, step by step, without Prefect: pre-flight, plan, what to build, dispatch, outcomes,
catalog, report, publish, page.

The orchestrator plugs in through `Engine`: where each build runs and how one waits for it, how sources are
resolved and the toolchain probed, the catalog update, publishing and the run's artifacts. `flows/engine.py`
gives Prefect's (tasks in this process, or flow runs on work pools); a test can give one that builds in
place. Beside it, a `RunReport` is handed what the run has to say (mlc_farm/report/run_report.py: the
terminal's). A run starts from its `Preflight` (mlc_farm/building/preflight.py), made once.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from mlc_farm.building.preflight import Preflight
from mlc_farm.building.workdirs import remove_stale_workdirs
from mlc_farm.catalog.history import night_regressions
from mlc_farm.errors import StoreError
from mlc_farm.formatting import clock
from mlc_farm.gc_tuning import fewer_full_collections
from mlc_farm.matrix.schema import LoadedMatrix, ModelSpec
from mlc_farm.planning.durations import estimate
from mlc_farm.planning.fingerprints import Fingerprint
from mlc_farm.planning.kinds import Build, all_builds, kind_of, label, on_device, reads
from mlc_farm.planning.plan import ModelBuilds, Plan, conversion_classes, make_plan
from mlc_farm.planning.schedule import Scheduler, to_build
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import DONE, Outcome, PublishResult, PublishTarget, UnitResult
from mlc_farm.records.reads import all_records, load_failure, load_record
from mlc_farm.records.schema import (
    BuildRecord,
    CatalogEntry,
    CheckRecord,
    FailureRecord,
    LibraryRecord,
    now,
    referenced_blobs,
)
from mlc_farm.report.night import NightReport, night_report
from mlc_farm.report.run_report import TerminalReport
from mlc_farm.report.status import RunStatus, StatusDisplay
from mlc_farm.report.summary import Summary, summarize
from mlc_farm.settings import load_settings
from mlc_farm.store import lease
from mlc_farm.store.layout import BLOBS, blob_url, toolchain_path
from mlc_farm.toolchain.info import SNAPSHOT_POOL, ToolchainInfo
from mlc_farm.toolchain.process import accept_steps
from mlc_farm.trust import attestations, keys

Mode = Literal["embedded", "farm"]
HUB_UNREACHABLE = "the Hugging Face Hub could not be reached to resolve the sources"


class Engine(Protocol):
    """What a run asks of its orchestrator."""

    mode: Mode  # embedded: every build in this process; farm: each on the work pool of its device

    def resolve(self, loaded: LoadedMatrix, models: list[ModelSpec]) -> dict[str, ResolvedSource]: ...

    def fingerprints(self, toolchain: ToolchainInfo, classes: dict[str, dict[str, Any]]) -> dict[str, Fingerprint]:
        """The toolchain's conversion fingerprints of these classes (mlc_farm.planning.fingerprints); {} where they cannot
        be had (convert keys then hold the toolchain version)."""
        ...

    def start(self, build: Build, builds: ModelBuilds | None, source: ResolvedSource | None) -> Any:
        """Start a build where it runs; a handle to wait for."""
        ...

    def finished(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles whose build ended, waiting at most `timeout` seconds for one."""
        ...

    def outcome(self, handle: Any) -> Outcome: ...

    def slots(self, pools: set[str]) -> dict[str, int | None]:
        """Farm mode: builds at once per pool (None: no limit)."""
        ...

    def update_catalog(
        self, plan: Plan, sources: dict[str, ResolvedSource], records: dict[str, BuildRecord]
    ) -> list[UnitResult]: ...

    def publish(self, units: list[PublishTarget]) -> list[tuple[str, PublishResult | Exception]]:
        """Publish (model, quantization, repo, private) units; each repo's result or error."""
        ...

    def write_page(self, records: list[BuildRecord], known: list[CatalogEntry]) -> None:
        """The catalog page, given every build record of the store and the entries this run left as they were."""
        ...


class RunReport(Protocol):
    """What a run says as it goes and when it ends: mlc_farm/report/run_report.py renders it on the terminal,
    report/prefect_report.py also as the run's artifacts and alert."""

    def planned(self, todo: int, reused: int) -> None: ...

    def live(self, status: RunStatus) -> StatusDisplay: ...

    def finished(self, display: StatusDisplay, done: int, of: int, ok: bool, label: str, at: str) -> None: ...

    def ended(self, summary: Summary, night: NightReport) -> None: ...

    def published(self, row: dict[str, str]) -> None: ...

    def closed(self) -> None:
        """The run has said everything: a report that keeps what it was told (artifacts, an alert) keeps it now."""
        ...


@dataclasses.dataclass
class Work:
    """What a run builds, chosen once its plan is made: the plan and its sources, the keys to build, the
    outcomes of those the store has, and the scheduler and labels that dispatch the rest."""

    sources: dict[str, ResolvedSource]
    plan: Plan
    todo: set[str]
    outcomes: dict[str, Outcome]
    scheduler: Scheduler
    labels: dict[str, str]


@dataclasses.dataclass
class Progress:
    """What a run has done so far: enough to say, when it is stopped, what is kept and what is left."""

    to_run: int = 0
    reused: int = 0
    finished: dict[str, Outcome] = dataclasses.field(default_factory=dict)

    def kept(self) -> int:
        return sum(usable(o) for o in self.finished.values())


def usable(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.status in DONE


class RunResult(BaseModel):
    """How a run ended, as the CLI and the flow's callers read it (never parsed out of a message): `reason`
    "hub unreachable" is a service's fault (exit 3, a later run may do), "stopped" names the signal."""

    ok: bool
    message: str
    reason: Literal["done", "failed cells", "hub unreachable", "refused", "stopped"] = "done"
    signal: str | None = None


class RunFailed(Exception):
    """A run that did not end well, as its final state carries it: Prefect raises a failed state's data when its
    result is asked for, so the data is this exception (a plain result there is Prefect's own TypeError), which
    holds how the run ended."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.message)
        self.result = result

    def __reduce__(self) -> tuple[type[RunFailed], tuple[RunResult]]:  # pickled with the state's result
        return RunFailed, (self.result,)


class MatrixRun:
    """One run, in named steps; `execute` runs them in order, each handing what it found to the next (the
    plan, then the `Work` chosen from it) rather than leaving it on the run half-made."""

    def __init__(
        self,
        pre: Preflight,
        engine: Engine,
        force: bool,
        progress: Progress,
        log: logging.Logger | Any,
        report: RunReport | None = None,
    ) -> None:
        self.pre, self.engine, self.force, self.progress, self.log = pre, engine, force, progress, log
        self.report = report or TerminalReport()
        self.store = pre.store()
        self.matrix = pre.matrix
        self.began: datetime = now()
        self.records: dict[str, BuildRecord] = {}  # read once: on S3 each look-up is a GET

    def execute(self) -> RunResult:
        try:
            work = self.prepare()
        except StoreError as e:  # full or read-only before any build began (the probe, a fingerprint): no summary
            return self.refused(str(e), "nothing was built")
        return self.complete(work)

    @fewer_full_collections()  # the records read are kept to the end: fewer walks over them
    def prepare(self) -> Work:
        """The run up to its choice of builds: the plan, and what the store already has. `mlc-farm build` asks
        this first, without Prefect, and completes a run with nothing to build there too."""
        accept_steps()
        self.began = now()
        self.log.info("toolchain: %s", self.pre.toolchain.describe())
        self.keep_probe()
        sources, plan = self.make_plan()
        self.clean_up()
        return self.choose(sources, plan)

    @fewer_full_collections()
    def complete(self, work: Work) -> RunResult:
        """Run the chosen builds, then move the catalog, report, publish and write the page."""
        status = self.dispatch(work)
        outcomes, plan = self.collect(work), work.plan
        try:
            units, refused = self.engine.update_catalog(plan, work.sources, self.records), None
        except StoreError as e:  # a full or read-only store: the run still ends with its summary, saying so
            units, refused = [], str(e)
        summary = summarize(plan, outcomes, units)
        history = [r for _, r in all_records(self.store, self.records)]  # the regressions' and the page's series
        summary.regressions = night_regressions(history, set(plan.check_builds), load_settings().speed_regression)
        self.ended(work, summary, status)
        failed_units = {(r.model, r.quantization) for r in summary.failed} | {
            (u.model, u.quantization) for u in units if u.status in ("kept previous", "not built", "damaged")
        }
        publish_failures = self.publish(failed_units) if refused is None else 0
        try:
            if refused is None:
                # After publishing: its links go to the Hub repos of these builds.
                self.engine.write_page(history, [u.entry for u in units if u.entry])
        except StoreError as e:
            refused = str(e)
        self.report.closed()
        result = self.result(work, summary, units, publish_failures)
        return result if refused is None else self.refused(refused, result.message)

    def refused(self, why: str, then: str) -> RunResult:
        """The run's end when the store refused a write (full, read-only): failed, in the store's words."""
        self.log.error("the store refused a write: %s", why)
        return RunResult(ok=False, message=f"the store refused a write ({why}); {then}", reason="failed cells")

    def keep_probe(self) -> None:
        """Embedded runs keep their probe in the store (farm pools keep theirs): `plan` on a machine without a
        toolchain checks the matrix's names against it."""
        if self.engine.mode == "embedded":
            self.store.write_json(toolchain_path(SNAPSHOT_POOL), self.pre.toolchain.model_dump())

    def make_plan(self) -> tuple[dict[str, ResolvedSource], Plan]:
        wanted = {c.model for c in self.pre.cells}
        sources = self.engine.resolve(self.pre.loaded, [m for m in self.matrix.models if m.id in wanted])
        classes = conversion_classes(self.matrix, self.pre.cells, sources)
        found = self.engine.fingerprints(self.pre.toolchain, classes) if classes else {}
        return sources, make_plan(self.matrix, self.pre.cells, sources, self.pre.toolchain, found)

    def clean_up(self) -> None:
        """What earlier runs that died left: unfinished uploads (begun long before a live run would finish a
        blob) and, in embedded mode, their work directories."""
        stale = self.store.abort_stale_uploads(
            timedelta(hours=load_settings().stale_upload_hours), now=lease.store_now(self.store)
        )
        if stale:
            self.log.info("aborted %d unfinished uploads left by earlier runs", len(stale))
        if self.engine.mode == "embedded" and (left := remove_stale_workdirs()):
            self.log.info("removed %d work directories that killed builds left behind", len(left))

    def choose(self, sources: dict[str, ResolvedSource], plan: Plan) -> Work:
        """The builds to run: those whose record is missing, damaged, not signed by its build (no attestation, or
        one that does not verify) or points at missing blobs (or all, forced)."""
        lock = threading.Lock()

        @functools.cache
        def listed() -> frozenset[str]:
            return frozenset(name.rsplit("/", 1)[-1] for name in self.store.names(BLOBS))

        def stored_blobs() -> frozenset[str]:
            """Every blob in the store, listed once when first needed (one LIST per 1,000 blobs on S3)."""
            with lock:
                return listed()

        trusted = keys.trusted_keys()
        # Said once the look-ups are done, from this thread: a line logged from a look-up's thread reaches Prefect
        # without the run's context (no API address), and Prefect starts a server of its own to take it.
        broken: list[str] = []

        def have(key: str) -> bool:
            record = attestations.attested(self.store, key, trusted)  # one its build did not sign is built again
            if record is None:
                return False
            if missing := [f.path for f in referenced_blobs(record) if f.sha256 not in stored_blobs()]:
                with lock:
                    broken.append(
                        f"build {key[:12]} points at {len(missing)} missing blobs ({missing[0]}): rebuilding it"
                    )
                return False
            self.records[key] = record
            return True

        todo = to_build(plan, have, self.force, self.store.readers)
        for line in sorted(broken):
            self.log.warning("%s", line)
        reused = {k: Outcome(status="reused") for k in all_builds(plan) if k not in todo}
        self.progress.to_run, self.progress.reused = len(todo), len(reused)
        return Work(sources, plan, todo, reused, self._scheduler(sources, plan, todo), _labels(plan))

    def _scheduler(self, sources: dict[str, ResolvedSource], plan: Plan, todo: set[str]) -> Scheduler:
        """Critical-path order from the durations of earlier builds, over the engine's pools and slots."""
        durations = (
            estimate(plan, [r for _, r in all_records(self.store)], {m: s.config for m, s in sources.items()})
            if todo
            else {}
        )
        builds = list(all_builds(plan).values())
        pools = {b.key: d.work_pool if (d := on_device(b)) else self.matrix.weights_pool for b in builds}
        if self.engine.mode == "embedded":  # one pool of MLC_FARM_PARALLEL slots
            return Scheduler(plan, todo, {"local": load_settings().parallel}, durations=durations)
        return Scheduler(plan, todo, self.engine.slots(set(pools.values())), lambda b: pools[b.key], durations)

    def dispatch(self, work: Work) -> RunStatus:
        """Start what the scheduler allows, a line per finished build and a live status of the running ones,
        until nothing runs; the status keeps when each build ran."""
        self.report.planned(len(work.todo), len(work.outcomes))
        status = RunStatus(work.labels, len(work.todo))
        running: dict[Any, str] = {}
        finished = self.progress.finished

        def start_allowed() -> None:
            for build, builds in work.scheduler.starts():
                source = work.sources[model] if (model := reads(build)) else None
                running[self.engine.start(build, builds, source)] = build.key
                status.start(build.key)

        with self.report.live(status) as display:
            start_allowed()
            while running:
                display.tick()
                for handle in self.engine.finished(list(running), timeout=1):
                    key = running.pop(handle)
                    finished[key] = self.engine.outcome(handle)
                    ok = usable(finished[key])
                    work.scheduler.finish(key, ok)
                    status.finish(key, ok)
                    start_allowed()
                    at = clock(status.now() - status.started)
                    self.report.finished(display, len(finished), len(work.todo), ok, work.labels[key], at)
        return status

    def collect(self, work: Work) -> dict[str, Outcome]:
        """Every build's outcome, with its log and validation (or, in farm mode, the failure the worker wrote)."""
        outcomes = work.outcomes | self.progress.finished
        for b in work.scheduler.never_started():
            outcomes[b.key] = Outcome(status="not run", detail=kind_of(b).waits)
        for key, o in outcomes.items():
            if o.status in DONE:
                record = self.records.get(key) or load_record(self.store, key)
                if record:
                    self.records[key] = record
                    o.log = blob_url(self.store.url, record.log.sha256) if record.log else None
                    o.validation = _findings(record)
            elif o.status == "failed" and not o.log and (failure := self._failure_since_began(key)):
                # Farm mode: the worker wrote what failed; the dispatcher only saw its flow run end Failed.
                o.log = blob_url(self.store.url, failure.log.sha256) if failure.log else None
                o.detail = failure.error
        return outcomes

    def _failure_since_began(self, key: str) -> FailureRecord | None:
        failure = load_failure(self.store, key)
        return failure if failure and failure.failed_at >= self.began else None

    def ended(self, work: Work, summary: Summary, status: RunStatus) -> None:
        """The night's use of the pools, reported with the summary; a damaged entry in the run's log too."""
        pool_of = {key: work.scheduler.pool_of(b) for key, b in all_builds(work.plan).items()}
        elapsed = status.now() - status.started
        night = night_report(work.plan, status.spans, pool_of, work.scheduler.slots, work.labels, elapsed)
        self.report.ended(summary, night)
        for u in (u for u in summary.units if u.status == "damaged"):
            self.log.error("%s %s: %s", u.model, u.quantization, u.detail)

    def publish(self, failed_units: set[tuple[str, str]]) -> int:
        """Publish every model x quantization whose cells all succeeded (a partial set would delete libraries
        from the Hub), in matrix order, telling the report each repo's row; how many failed."""
        units = [t for t in self.pre.targets if (t.model, t.quantization) not in failed_units]
        failures = 0
        for repo, result in self.engine.publish(units) if units else []:
            if isinstance(result, Exception):
                failures += 1
                self.report.published({"repo": repo, "result": "failed", "detail": str(result)})
            else:
                done = f"commit {result.commit}" if result.commit else "unchanged, no commit"
                detail = f"{len(result.operations)} operations, {result.unchanged} files unchanged"
                self.report.published({"repo": repo, "result": done, "detail": detail})
        return failures

    def result(self, work: Work, summary: Summary, units: list[UnitResult], publish_failures: int) -> RunResult:
        failed, message = summary.failed, summary.message()
        damaged = [u for u in units if u.status == "damaged"]
        if publish_failures:
            message += f"; {publish_failures} publish failed"
        hub_down = bool(failed) and all(r.status == "unresolved" and work.sources[r.model].unreachable for r in failed)
        if hub_down:
            message = f"{HUB_UNREACHABLE}; {message}"
        if failed or publish_failures or damaged:
            failures = f"; failed: {summary.failures()}" if failed else ""
            first = (
                f"{len(failed)} of {len(summary.rows)} cells failed"
                if failed or not publish_failures
                else f"every cell built, but {publish_failures} publish failed"
            )
            return RunResult(
                ok=False,
                message=f"{first}; {message}{failures}",
                reason="hub unreachable" if hub_down else "failed cells",
            )
        return RunResult(ok=True, message=message)


def _labels(plan: Plan) -> dict[str, str]:
    return {key: label(b) for key, b in all_builds(plan).items()}


def _findings(record: BuildRecord) -> str:
    """What a library's or a check's build found (its validation, a check's fidelity), as the summary shows it."""
    validation = record.validation if isinstance(record, LibraryRecord | CheckRecord) else None
    fid = record.fidelity if isinstance(record, CheckRecord) else None
    return "; ".join(found.describe() for found in (validation, fid) if found)
