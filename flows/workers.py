"""The flows that run on the work pools in farm mode: one weight build, one library build, a toolchain probe.

Each writes its result to the store (the channel between the dispatcher and the workers), so the
dispatcher needs no result storage shared with the workers.
"""

from __future__ import annotations

from prefect import flow
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from mlc_farm import build, sources, toolchain
from mlc_farm.plan import LibBuild, WeightBuild
from mlc_farm.sources import ResolvedSource
from mlc_farm.store import open_store
from tasks.build import log_line


def compile_limit(pool: str) -> str:
    """The global concurrency limit that keeps one compile per GPU of a pool (`mlc-farm farm init`)."""
    return f"mlc-compile-{pool}"


def toolchain_record(pool: str) -> str:
    return f"toolchains/{pool}.json"


@flow(name="probe-toolchain", flow_run_name="probe toolchain on {pool}")
def probe_toolchain_flow(pool: str, store: str | None = None) -> None:
    open_store(store).write_json(toolchain_record(pool), toolchain.probe().model_dump())


@flow(name="build-weights", flow_run_name="weights {wb.model}/{wb.quantization}")
def build_weights_flow(wb: WeightBuild, source: ResolvedSource, convert_device: str, store: str | None = None) -> str:
    return build.build_weights(
        open_store(store), wb, sources.fetch(source), convert_device, on_line=log_line, flow_run=str(flow_run.get_id())
    ).key


@flow(name="build-library", flow_run_name="library {lb.device.name}/{lb.quantization}")
def build_library_flow(lb: LibBuild, config_from: str, store: str | None = None) -> str:
    with concurrency(compile_limit(lb.device.work_pool), occupy=1):
        return build.build_library(
            open_store(store), lb, config_from, on_line=log_line, flow_run=str(flow_run.get_id())
        ).key
