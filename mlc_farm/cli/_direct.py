"""The engine of `mlc-farm build` before Prefect starts: the run's own steps in this process, so that a build
with nothing to build (every key in the store) completes here, at the cost of its plan, instead of starting
Prefect's temporary server for no task. A build with work goes to the nightly flow instead (`start` is never
asked of this engine)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlc_farm.building.preflight import Preflight
from mlc_farm.building.run import Mode
from mlc_farm.catalog.update import update_units
from mlc_farm.distribute import hub
from mlc_farm.matrix.schema import LoadedMatrix, ModelSpec
from mlc_farm.planning import fingerprints, sources
from mlc_farm.planning.fingerprints import Fingerprint
from mlc_farm.planning.kinds import Build
from mlc_farm.planning.plan import ModelBuilds, Plan
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import Outcome, PublishResult, PublishTarget, UnitResult
from mlc_farm.records.schema import BuildRecord, CatalogEntry
from mlc_farm.report import catalog_page
from mlc_farm.settings import load_settings
from mlc_farm.store import open_store


class NeedsPrefect(Exception):
    """The run has builds to run: they run under Prefect (the nightly flow), not here."""


class DirectEngine:
    """The store and the Hub called from this process; no task. Its run reports on the terminal alone: no
    artifact (a temporary server's vanish with it), no alert (alerts are a farm's, sent from its server)."""

    mode: Mode = "embedded"

    def __init__(self, pre: Preflight) -> None:
        self.store = open_store(pre.store_url)

    def resolve(self, loaded: LoadedMatrix, models: list[ModelSpec]) -> dict[str, ResolvedSource]:
        return sources.resolve(loaded, models)

    def fingerprints(self, toolchain: Any, classes: dict[str, dict[str, Any]]) -> dict[str, Fingerprint]:
        return fingerprints.fingerprints(self.store, toolchain, classes)  # the CLI's toolchain is the run's

    def start(self, build: Build, builds: ModelBuilds | None, source: ResolvedSource | None) -> Any:
        raise NeedsPrefect(build.key)

    def finished(self, handles: list[Any], timeout: float) -> list[Any]:
        raise NeedsPrefect()

    def outcome(self, handle: Any) -> Outcome:
        raise NeedsPrefect()

    def slots(self, pools: set[str]) -> dict[str, int | None]:
        return {}

    def update_catalog(
        self, plan: Plan, resolved: dict[str, ResolvedSource], records: dict[str, BuildRecord]
    ) -> list[UnitResult]:
        return update_units(self.store, plan, resolved, records)

    def publish(self, units: list[PublishTarget]) -> list[tuple[str, PublishResult | Exception]]:
        """MLC_FARM_PARALLEL at a time, results in matrix order (as the flow's engine does)."""

        def one(t: PublishTarget) -> tuple[str, PublishResult | Exception]:
            try:
                return t.repo, hub.publish(self.store, t.model, t.quantization, t.repo, t.private)
            except Exception as e:  # each repo's failure is its row; the others go on
                return t.repo, e

        with ThreadPoolExecutor(max_workers=load_settings().parallel) as pool:
            return list(pool.map(one, units))

    def write_page(self, records: list[BuildRecord], known: list[CatalogEntry]) -> None:
        catalog_page.write_page(self.store, records, known)
