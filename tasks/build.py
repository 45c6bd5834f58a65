"""Prefect tasks: thin wrappers over mlc_farm.build, with retries for transient errors only.

A toolchain failure or a bad input fails at once: running the same compile again gives the same error.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from mlc_farm import build, sources, toolchain
from mlc_farm.hub import PublishError
from mlc_farm.matrix import MatrixError
from mlc_farm.plan import LibBuild, Plan, WeightBuild
from mlc_farm.sources import ResolvedSource
from mlc_farm.store import StoreError, open_store

PERMANENT = (build.BuildFailed, toolchain.ToolchainError, StoreError, MatrixError, PublishError, ValueError)


def transient_only(_task: Any, _task_run: Any, state: Any) -> bool:
    """Retry network hiccups and the like; never a deterministic failure."""
    try:
        state.result()
    except PERMANENT:
        return False
    except Exception:
        return True
    return False


def log_line(line: str) -> None:
    """Stream a toolchain output line into the Prefect log of the current run."""
    get_run_logger().info(line)


@task(name="probe-toolchain")
def probe_toolchain() -> toolchain.ToolchainInfo:
    return toolchain.probe()


@task(name="resolve-sources", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=transient_only)
def resolve_sources(loaded: Any, models: list[Any]) -> dict[str, ResolvedSource]:
    return sources.resolve(loaded, models)


@task(
    name="build-weights",
    task_run_name="weights {wb.model}/{wb.quantization}",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=transient_only,
    tags=["mlc-weights"],
)
def build_weights(store_url: str, wb: WeightBuild, source: ResolvedSource, convert_device: str) -> str:
    source_dir = sources.fetch(source)
    store = open_store(store_url)
    return build.build_weights(
        store, wb, source_dir, convert_device, on_line=log_line, flow_run=str(flow_run.get_id())
    ).key


@task(
    name="build-library",
    task_run_name="library {lb.device.name}/{lb.quantization} {lb.key:.12}",
    retries=3,
    retry_delay_seconds=[2, 5, 15],
    retry_condition_fn=transient_only,
    tags=["mlc-compile"],
)
def build_library(store_url: str, lb: LibBuild, config_from: str) -> str:
    store = open_store(store_url)
    return build.build_library(store, lb, config_from, on_line=log_line, flow_run=str(flow_run.get_id())).key


@task(name="update-catalog", retries=3, retry_delay_seconds=[2, 5, 15], retry_condition_fn=transient_only)
def update_catalog(store_url: str, plan: Plan, resolved: dict[str, ResolvedSource]) -> int:
    """One task for every catalog entry: a no-op nightly over 1,000 cells stays a matter of seconds."""
    store = open_store(store_url)
    return sum(
        build.update_catalog(store, plan, resolved[model], model, quant) is not None for model, quant in plan.units()
    )
