"""The engine a run is given under Prefect (mlc_farm/building/run.py's `Engine`): each build a task in this
process (embedded) or a flow run on its device's work pool through `run_deployment` (farm), the catalog update
and publishing as tasks. What the run says (its artifacts and alert) is mlc_farm/report/prefect_report.py's.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from typing import Any, TypeVar, cast

from prefect.futures import PrefectConcurrentFuture, PrefectFuture
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from mlc_farm.building.preflight import Preflight
from mlc_farm.building.run import Mode
from mlc_farm.matrix.schema import LoadedMatrix, ModelSpec
from mlc_farm.planning.fingerprints import Fingerprint
from mlc_farm.planning.kinds import Build, on_device
from mlc_farm.planning.plan import ModelBuilds, Plan
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import BY_ANOTHER_RUN, Built, Outcome, PublishResult, PublishTarget, UnitResult
from mlc_farm.records.schema import BuildRecord, CatalogEntry
from mlc_farm.settings import load_settings
from mlc_farm.tasks.builds import (
    conversion_fingerprints,
    resolve_sources,
    run_build,
    update_catalog,
    write_catalog_page,
)
from mlc_farm.tasks.dispatch import dispatch
from mlc_farm.tasks.publish import publish_unit
from mlc_farm.toolchain.info import ToolchainInfo

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


def ended(handles: list[PrefectConcurrentFuture[Any]], timeout: float) -> list[PrefectConcurrentFuture[Any]]:
    """The builds that ended, as soon as one has (else none after `timeout` s), so that what waits on them
    starts at once. Not `prefect.futures.wait`: it waits out its whole timeout for every future, and in the
    main thread (the flow of `mlc-farm build`) it times out with SIGALRM, whose exception can land between the
    steps of its own lock handling and fail the flow with `RuntimeError: release unlocked lock` (it did, in a
    build whose futures ended as the alarm went off)."""
    by_future = {handle.wrapped_future: handle for handle in handles}
    done, _ = wait(by_future, timeout=timeout, return_when=FIRST_COMPLETED)
    return [by_future[f] for f in done]


class PrefectEngine:
    """The run's orchestrator: tasks in this process (embedded), or flow runs on each device's work pool
    through `run_deployment` (farm)."""

    def __init__(self, mode: Mode, force: bool, pre: Preflight):
        self.mode, self.force = mode, force
        self.store_url = pre.store_url
        self.convert_device, self.weights_pool = pre.matrix.convert_device, pre.matrix.weights_pool

    def resolve(self, loaded: LoadedMatrix, models: list[ModelSpec]) -> dict[str, ResolvedSource]:
        return resolve_sources(_as_is(loaded), _as_is(models))

    def fingerprints(self, toolchain: ToolchainInfo, classes: dict[str, dict[str, Any]]) -> dict[str, Fingerprint]:
        """Twins convert in seconds on a CPU: here, with this process's toolchain, when it is the run's (farm
        mode: the image of the pool the nightly runs on); otherwise none, and convert keys hold the version."""
        here = self.mode == "embedded"  # the run's toolchain was probed in this process
        return conversion_fingerprints(self.store_url, _as_is(toolchain), _as_is(classes), here)

    def start(self, build: Build, builds: ModelBuilds | None, source: ResolvedSource | None) -> PrefectFuture[Any]:
        """Embedded: a task here. Farm: a flow run on the build's pool (the device's, else the weights pool)."""
        if self.mode == "embedded":
            return run_build.submit(self.store_url, build, builds, source, self.convert_device, self.force)
        if (device := on_device(build)) is not None:
            params: dict[str, Any] = {"lb": build, "builds_from": builds, "store": self.store_url, "force": self.force}
            return dispatch.submit(f"build-library/{device.work_pool}", _jsonable(params), build.key, self.store_url)
        params = {
            "build": build,
            "source": source,
            "convert_device": self.convert_device,
            "store": self.store_url,
            "force": self.force,
        }
        return dispatch.submit(f"build-weights/{self.weights_pool}", _jsonable(params), build.key, self.store_url)

    def finished(self, handles: list[PrefectConcurrentFuture[Any]], timeout: float) -> list[Any]:
        return ended(handles, timeout)

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

    def publish(self, units: list[PublishTarget]) -> list[tuple[str, PublishResult | Exception]]:
        """MLC_FARM_PARALLEL at a time, in matrix order: repos that share a library then mostly find it already
        uploaded by an earlier one."""
        results: list[tuple[str, PublishResult | Exception]] = []
        limit = load_settings().parallel
        for first in range(0, len(units), limit):
            wave = [
                (t.repo, publish_unit.submit(self.store_url, t.model, t.quantization, t.repo, t.private))
                for t in units[first : first + limit]
            ]
            for repo, future in wave:
                future.wait()
                try:
                    results.append((repo, future.result()))
                except Exception as e:
                    results.append((repo, e))
        return results

    def write_page(self, records: list[BuildRecord], known: list[CatalogEntry]) -> None:
        write_catalog_page(self.store_url, _as_is(records), _as_is(known))


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in params.items()}
