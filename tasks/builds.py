"""Prefect tasks: thin wrappers over mlc_farm.building (one task runs a build of any kind).

No task is retried by Prefect: a toolchain failure or a bad input gives the same error again, and a service
(S3, the Hub) is retried by the one layer around each call (mlc_farm.retry.retry_transient), so retries
never multiply and an outage never reruns a conversion or a compile.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run

from mlc_farm.building import runners
from mlc_farm.building.runners import Given
from mlc_farm.catalog.update import update_units
from mlc_farm.planning import fingerprints, sources
from mlc_farm.planning.kinds import Build, label
from mlc_farm.planning.plan import ModelBuilds, Plan
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import Built, UnitResult
from mlc_farm.records.schema import BuildRecord, CatalogEntry
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


def _task_run_name() -> str:
    """`convert tiny/q4f16_1`, `library cpu/q4f16_1 (3f2a...)`: the build's label."""
    return label(task_run.parameters["b"])


@task(retries=0, name="build", task_run_name=_task_run_name)
def run_build(
    store_url: str,
    b: Build,
    builds: ModelBuilds | None,
    source: ResolvedSource | None,
    convert_device: str,
    force: bool,
) -> Built:
    """Any kind of build, in this process: a kind that runs on the weights pool fetches its source first."""
    st, run = open_store(store_url), _run_id()
    files = None
    if source is not None:
        with activity.phase(b.key, "fetching the source"):
            files = sources.fetch(source)
    given = Given(
        files=files, builds=builds, convert_device=convert_device, on_line=log_line, flow_run=run, force=force
    )
    return _built(runners.run(st, b, given), run)


def _built(record: BuildRecord, run: str | None) -> Built:
    return Built(key=record.key, by_another_run=record.flow_run != run)


@task(retries=0, name="update-catalog", cache_policy=NO_CACHE)
def update_catalog(
    store_url: str, plan: Plan, resolved: dict[str, ResolvedSource], known: dict[str, BuildRecord]
) -> list[UnitResult]:
    return update_units(open_store(store_url), plan, resolved, known)


@task(retries=0, name="catalog-page", cache_policy=NO_CACHE)
def write_catalog_page(
    store_url: str, records: list[BuildRecord] | None = None, known: list[CatalogEntry] | None = None
) -> str:
    """index.html and catalog.json at the store's root: the catalog for people without a Prefect login."""
    return catalog_page.write_page(open_store(store_url), records, known or ())


def _run_id() -> str:
    return str(flow_run.get_id())
