"""The flows that run on the work pools in farm mode: one weight build, one library build, a toolchain probe.

Each writes its result to the store (the channel between the dispatcher and the workers), so the
dispatcher needs no result storage shared with the workers.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from pydantic import Field

from mlc_farm import build as builds
from mlc_farm import sources, toolchain
from mlc_farm.farm import compile_limit
from mlc_farm.plan import ConfigBuild, ConvertBuild, LibBuild, ModelBuilds
from mlc_farm.sources import ResolvedSource
from mlc_farm.store import open_store
from mlc_farm.store.layout import toolchain_path
from mlc_farm.tasks.build import log_line


@flow(retries=0, name="probe-toolchain", flow_run_name="probe toolchain on {pool}")
def probe_toolchain_flow(pool: str, store: str | None = None) -> None:
    open_store(store).write_json(toolchain_path(pool), toolchain.probe().model_dump())


@flow(retries=0, name="build-weights", flow_run_name="{build.kind} {build.model}/{build.quantization}")
def build_weights_flow(
    build: Annotated[ConvertBuild | ConfigBuild, Field(discriminator="kind")],
    source: ResolvedSource,
    convert_device: str,
    store: str | None = None,
    force: bool = False,
) -> str:
    """A convert or a config build, on the weights pool (CPU is enough with convert_device: cpu)."""
    return builds.build_from_source(
        open_store(store),
        build,
        sources.fetch(source),
        convert_device,
        on_line=log_line,
        force=force,
        flow_run=str(flow_run.get_id()),
    ).key


@flow(retries=0, name="build-library", flow_run_name="library {lb.device.name}/{lb.quantization}")
def build_library_flow(lb: LibBuild, builds_from: ModelBuilds, store: str | None = None, force: bool = False) -> str:
    with concurrency(compile_limit(lb.device.work_pool), occupy=1):
        return builds.build_library(
            open_store(store), lb, builds_from, on_line=log_line, flow_run=str(flow_run.get_id()), force=force
        ).key
