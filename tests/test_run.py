"""The run of a matrix without Prefect (mlc_farm/building/run.py): an engine that builds each build in place, here,
runs the same steps the nightly flow runs, with the toolchain double."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlc_farm.building import runners
from mlc_farm.building.preflight import preflight
from mlc_farm.building.run import MatrixRun, Progress
from mlc_farm.building.runners import Given
from mlc_farm.catalog.update import Records, update_unit
from mlc_farm.matrix.schema import LoadedMatrix, ModelSpec
from mlc_farm.planning import sources
from mlc_farm.planning.fingerprints import Fingerprint, fingerprints
from mlc_farm.planning.kinds import Build
from mlc_farm.planning.plan import ModelBuilds, Plan
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import Outcome, PublishResult, PublishTarget, UnitResult
from mlc_farm.records.reads import entries
from mlc_farm.records.schema import BuildRecord, CatalogEntry
from mlc_farm.report import catalog_page
from mlc_farm.report.night import NightReport
from mlc_farm.report.run_report import TerminalReport
from mlc_farm.report.status import StatusDisplay
from mlc_farm.report.summary import Summary
from mlc_farm.store import ArtifactStore
from mlc_farm.toolchain.info import ToolchainInfo
from mlc_farm.toolchain.probe import probe
from tests.helpers import ROOT


@dataclass(eq=False)
class Done:
    """A build that already ran (in place): its outcome."""

    outcome: Outcome


@dataclass
class InPlace:
    """An engine with no orchestrator: each build runs when it is started."""

    store: ArtifactStore
    mode: str = "embedded"

    def resolve(self, loaded: LoadedMatrix, models: list[ModelSpec]) -> dict[str, ResolvedSource]:
        return sources.resolve(loaded, models)

    def fingerprints(self, tc: ToolchainInfo, classes: dict[str, dict]) -> dict[str, Fingerprint]:
        return fingerprints(self.store, tc, classes)

    def start(self, b: Build, builds: ModelBuilds | None, source: ResolvedSource | None) -> Done:
        try:
            runners.run(self.store, b, Given(files=source and sources.fetch(source), builds=builds))
        except Exception as e:
            return Done(Outcome(status="failed", detail=str(e)))
        return Done(Outcome(status="built"))

    def finished(self, handles: list[Any], timeout: float) -> list[Any]:
        return handles

    def outcome(self, handle: Done) -> Outcome:
        return handle.outcome

    def slots(self, pools: set[str]) -> dict[str, int | None]:
        raise AssertionError("an embedded run has one local pool")

    def update_catalog(
        self, plan: Plan, resolved: dict[str, ResolvedSource], records: dict[str, BuildRecord]
    ) -> list[UnitResult]:
        rec = Records(self.store, records)
        return [update_unit(self.store, plan, resolved[m], m, q, rec) for m, q in plan.units]

    def publish(self, units: list[PublishTarget]) -> list[tuple[str, PublishResult | Exception]]:
        return []

    def write_page(self, records: list[BuildRecord], known: list[CatalogEntry]) -> None:
        catalog_page.write_page(self.store, records, known)


class Told(TerminalReport):
    """The terminal's report, and what the run told it, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[Any, ...]] = []
        self.summaries: list[Summary] = []

    def planned(self, todo: int, reused: int) -> None:
        self.events.append(("planned", todo, reused))

    def finished(self, display: StatusDisplay, done: int, of: int, ok: bool, label: str, at: str) -> None:
        self.events.append(("finished", done, of, ok))

    def ended(self, summary: Summary, night: NightReport) -> None:
        self.events.append(("ended", len(summary.rows)))
        self.summaries.append(summary)

    def closed(self) -> None:
        self.events.append(("closed",))


@pytest.mark.slow
def test_a_run_builds_the_matrix_then_reuses_it_without_prefect(tiny_matrix: Path, tmp_path: Path) -> None:
    """... and tells its report what it did: the run decides, the report (the terminal's here) renders."""
    told: list[list[tuple[Any, ...]]] = []

    def run() -> tuple[bool, str]:
        pre = preflight(str(tiny_matrix), None, None, None, str(tmp_path / "store"), lambda st, p: probe())
        engine, report = InPlace(pre.store()), Told()
        done = MatrixRun(pre, engine, False, Progress(), logging.getLogger("test"), report).execute()
        told.append(report.events)
        return done.ok, done.message

    assert run() == (
        True,
        "8 cells: 8 ok (convert 4 built; config 4 built; library 4 built; reference 2 built; check 8 built)",
    )
    assert run() == (
        True,
        "8 cells: 8 ok (convert 4 reused; config 4 reused; library 4 reused; reference 2 reused; check 8 reused)",
    )
    from mlc_farm.store import open_store

    served = entries(open_store(str(tmp_path / "store")))
    assert len(served) == 4 and all(set(e.libs) == {"cpu", "vulkan"} for e in served)
    built, reused = told
    assert built == [
        ("planned", 22, 0),
        *(("finished", n, 22, True) for n in range(1, 23)),
        ("ended", 8),
        ("closed",),
    ]
    assert reused == [("planned", 0, 22), ("ended", 8), ("closed",)]


def test_the_run_and_its_steps_import_no_prefect() -> None:
    ask = "import sys, mlc_farm.building.run; print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"


def test_a_store_that_refuses_writes_before_any_build_ends_the_run_saying_so(
    tiny_matrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store turns read-only while the run plans (its probe is kept, its fingerprints computed): the run ends
    failed with the store's words and nothing built, not with an exception out of the flow."""
    import errno

    from mlc_farm.store.local import LocalStore

    pre = preflight(str(tiny_matrix), None, None, None, str(tmp_path / "store"), lambda st, p: probe())

    def read_only(store: LocalStore, name: str, doc: object) -> None:
        with store._writing(name):
            raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(LocalStore, "write_json", read_only)
    report = Told()
    done = MatrixRun(pre, InPlace(pre.store()), False, Progress(), logging.getLogger("test"), report).execute()
    assert not done.ok and done.reason == "failed cells" and report.events == []
    assert done.message.startswith("the store refused a write (") and "Read-only file system" in done.message
    assert done.message.endswith("; nothing was built")
