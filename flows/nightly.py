"""The nightly build: matrix -> plan -> only the builds whose key has no record -> store -> catalog.

Embedded mode: `mlc-farm build` runs this flow in one process with Prefect's temporary server. One failing
cell never stops the others; the run ends Failed with a table artifact naming every failure and its log.
"""

from __future__ import annotations

import os

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from rich.console import Console

from mlc_farm.build import load_record
from mlc_farm.matrix import load_matrix, select_models
from mlc_farm.plan import make_plan
from mlc_farm.store import open_store
from mlc_farm.summary import Outcome, Summary, summarize
from tasks.build import build_library, build_weights, probe_toolchain, resolve_sources, update_catalog

PARALLEL = int(os.environ.get("MLC_FARM_PARALLEL", "2"))


def _outcome(future: PrefectFuture) -> Outcome:
    future.wait()
    state = future.state
    if state.is_completed():
        return Outcome(status="built", log=None)
    try:
        state.result()
    except Exception as e:
        if state.name == "NotReady" or "Upstream" in type(e).__name__:
            return Outcome(status="skipped", detail="its weights failed")
        return Outcome(status="failed", detail=str(e), log=getattr(e, "log", None))
    return Outcome(status="failed", detail=state.message or state.name or "failed")


@flow(name="nightly-build", task_runner=ThreadPoolTaskRunner(max_workers=PARALLEL), log_prints=True)
def nightly_build(
    matrix_path: str, models: list[str] | None = None, force: bool = False, store: str | None = None
) -> State:
    logger = get_run_logger()
    loaded = load_matrix(matrix_path)
    cells = select_models(loaded.matrix, models, loaded.file)
    toolchain = probe_toolchain()
    if not toolchain.known:
        return Failed(message=f"toolchain unavailable: {toolchain.error}")
    logger.info("toolchain: %s", toolchain.describe())
    wanted = {c.model for c in cells}
    srcs = resolve_sources(loaded, [m for m in loaded.matrix.models if m.id in wanted])
    plan = make_plan(loaded.matrix, cells, srcs, toolchain)
    st = open_store(store)

    def have(key: str) -> bool:
        return not force and load_record(st, key) is not None

    outcomes: dict[str, Outcome] = {}
    futures: dict[str, PrefectFuture] = {}
    for wb in plan.weight_builds.values():
        if have(wb.key):
            outcomes[wb.key] = Outcome(status="reused")
        else:
            futures[wb.key] = build_weights.submit(st.url, wb, srcs[wb.model], loaded.matrix.convert_device)
    for lb in plan.lib_builds.values():
        if have(lb.key):
            outcomes[lb.key] = Outcome(status="reused")
        else:
            upstream = [futures[lb.config_from]] if lb.config_from in futures else []
            futures[lb.key] = build_library.submit(st.url, lb, wait_for=upstream)
    outcomes |= {key: _outcome(f) for key, f in futures.items()}
    for key, o in outcomes.items():
        if o.status in ("built", "reused"):
            record = load_record(st, key)
            o.log = f"{st.url}/blobs/sha256/{record.log.sha256}" if record and record.log else None
    for model, quant in plan.units():
        update_catalog(st.url, plan, srcs[model], model, quant)

    summary = summarize(plan, outcomes)
    _report(summary)
    failed = summary.failed
    message = f"{len(summary.rows)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.counts().items()))
    if failed:
        return Failed(message=f"{len(failed)} of {len(summary.rows)} cells failed; {message}", data=summary)
    return Completed(message=message, data=summary)


def _report(summary: Summary) -> None:
    create_table_artifact(
        key="mlc-farm-build-summary",
        table=[r.model_dump() for r in summary.rows],
        description="Every cell of the matrix: built, reused or failed, and where its log is.",
    )
    Console(width=160).print(summary.table())


if __name__ == "__main__":
    import sys

    nightly_build(sys.argv[1] if len(sys.argv) > 1 else "matrix.yaml")
