"""Prefect tasks: thin wrappers over mlc_farm.building.build.

No task is retried by Prefect: a toolchain failure or a bad input gives the same error again, and a service
(S3, the Hub) is retried by the one layer around each call (mlc_farm.retry.retry_transient), so retries
never multiply and an outage never reruns a conversion or a compile.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from mlc_farm.building import build
from mlc_farm.catalog.update import update_units
from mlc_farm.planning import fingerprints, sources
from mlc_farm.planning.plan import CheckBuild, ConfigBuild, ConvertBuild, LibBuild, ModelBuilds, Plan, ReferenceBuild
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import Built, UnitResult
from mlc_farm.records.schema import BuildRecord
from mlc_farm.report import activity, catalog_page
from mlc_farm.store import open_store
from mlc_farm.toolchain.info import ToolchainInfo, identity
from mlc_farm.toolchain.probe import probe, probe_here


def log_line(line: str) -> None:
    """Stream a toolchain output line into the Prefect log of the current run."""
    get_run_logger().info(line)


@task(retries=0, name="probe-toolchain")
def probe_toolchain(pools: list[str]) -> ToolchainInfo:
    return probe_here(pools)


@task(retries=0, name="conversion-fingerprints", cache_policy=NO_CACHE)
def conversion_fingerprints(
    store_url: str, run_toolchain: ToolchainInfo, classes: dict[str, dict[str, Any]], probed_here: bool = False
) -> dict[str, fingerprints.Fingerprint]:
    """`probed_here`: the run's toolchain is this process's (embedded mode), not probed again."""
    here = run_toolchain if probed_here else probe()
    if identity(here) != identity(run_toolchain):
        get_run_logger().warning(
            "conversion fingerprints not computed: this process runs %s, the run %s; convert "
            "keys hold the toolchain version",
            here.describe(),
            run_toolchain.describe(),
        )
        return {}
    return fingerprints.fingerprints(open_store(store_url), run_toolchain, classes)


@task(retries=0, name="resolve-sources", cache_policy=NO_CACHE)  # no hash of big inputs: nothing is cached
def resolve_sources(loaded: Any, models: list[Any]) -> dict[str, ResolvedSource]:
    return sources.resolve(loaded, models)


@task(retries=0, name="build-from-source", task_run_name="{b.kind} {b.model}/{b.quantization}", tags=["mlc-weights"])
def build_from_source(
    store_url: str, b: ConvertBuild | ConfigBuild, source: ResolvedSource, convert_device: str, force: bool
) -> Built:
    with activity.phase(b.key, "fetching the source"):
        st, files = open_store(store_url), sources.fetch(source)
    run = _run_id()
    record = build.build_from_source(st, b, files, convert_device, on_line=log_line, flow_run=run, force=force)
    return _built(record, run)


@task(
    retries=0,
    name="build-library",
    task_run_name="library {lb.device.name}/{lb.quantization} {lb.key:.12}",
    tags=["mlc-compile"],
)
def build_library(store_url: str, lb: LibBuild, builds: ModelBuilds, force: bool) -> Built:
    store, run = open_store(store_url), _run_id()
    return _built(build.build_library(store, lb, builds, on_line=log_line, flow_run=run, force=force), run)


@task(retries=0, name="build-reference", task_run_name="reference {rb.model}", tags=["mlc-weights"])
def build_reference(store_url: str, rb: ReferenceBuild, source: ResolvedSource, force: bool) -> Built:
    with activity.phase(rb.key, "fetching the source"):
        st, files = open_store(store_url), sources.fetch(source)
    run = _run_id()
    return _built(build.build_reference(st, rb, files, flow_run=run, force=force), run)


@task(
    retries=0,
    name="check-cell",
    task_run_name="check {cb.model}/{cb.quantization}/{cb.device.name}",
    tags=["mlc-compile"],
)
def check_cell(store_url: str, cb: CheckBuild, force: bool) -> Built:
    store, run = open_store(store_url), _run_id()
    return _built(build.check_cell(store, cb, on_line=log_line, flow_run=run, force=force), run)


def _built(record: BuildRecord, run: str | None) -> Built:
    return Built(key=record.key, by_another_run=record.flow_run != run)


@task(retries=0, name="update-catalog", cache_policy=NO_CACHE)
def update_catalog(
    store_url: str, plan: Plan, resolved: dict[str, ResolvedSource], known: dict[str, BuildRecord]
) -> list[UnitResult]:
    return update_units(open_store(store_url), plan, resolved, known)


@task(retries=0, name="catalog-page", cache_policy=NO_CACHE)
def write_catalog_page(store_url: str, records: list[BuildRecord] | None = None) -> str:
    """index.html and catalog.json at the store's root: the catalog for people without a Prefect login."""
    return catalog_page.write_page(open_store(store_url), records)


def _run_id() -> str:
    return str(flow_run.get_id())
