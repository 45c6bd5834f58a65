"""The nightly build: matrix -> plan -> only the builds whose key has no record -> store -> catalog.

Embedded mode: `mlc-farm build` runs this flow in one process with Prefect's temporary server. One failing
cell never stops the others; the run ends Failed with a table artifact naming every failure and its log.
"""

from __future__ import annotations

import os
from datetime import timedelta

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from rich.console import Console

from mlc_farm.build import load_record
from mlc_farm.hub import PublishError, repo_for
from mlc_farm.matrix import load_matrix, select_models
from mlc_farm.plan import make_plan
from mlc_farm.store import open_store
from mlc_farm.summary import Outcome, Summary, summarize
from tasks.build import build_library, build_weights, probe_toolchain, resolve_sources, update_catalog
from tasks.publish import publish_unit

PARALLEL = int(os.environ.get("MLC_FARM_PARALLEL", "2"))
# Uploads begun this long ago belong to runs that died: a live run finishes a blob well within it.
STALE_UPLOAD_HOURS = float(os.environ.get("MLC_FARM_STALE_UPLOAD_HOURS", "24"))


def _usable(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.status in ("built", "reused")


def _outcome(future: PrefectFuture) -> Outcome:
    future.wait()
    state = future.state
    if state.is_completed():
        return Outcome(status="built", log=None)
    try:
        state.result()
    except Exception as e:
        return Outcome(status="failed", detail=str(e), log=getattr(e, "log", None))
    return Outcome(status="failed", detail=state.message or state.name or "failed")


@flow(name="nightly-build", task_runner=ThreadPoolTaskRunner(max_workers=PARALLEL), log_prints=True)
def nightly_build(
    matrix_path: str, models: list[str] | None = None, force: bool = False, store: str | None = None
) -> State:
    logger = get_run_logger()
    loaded = load_matrix(matrix_path)
    cells = select_models(loaded.matrix, models, loaded.file)
    try:
        targets = {(c.model, c.quantization): repo_for(loaded.matrix, c.model, c.quantization) for c in cells}
    except PublishError as e:
        return Failed(message=str(e))
    toolchain = probe_toolchain()
    if not toolchain.known:
        return Failed(message=f"toolchain unavailable: {toolchain.error}")
    logger.info("toolchain: %s", toolchain.describe())
    wanted = {c.model for c in cells}
    srcs = resolve_sources(loaded, [m for m in loaded.matrix.models if m.id in wanted])
    plan = make_plan(loaded.matrix, cells, srcs, toolchain)
    st = open_store(store)
    stale = st.abort_stale_uploads(timedelta(hours=STALE_UPLOAD_HOURS))
    if stale:
        logger.info("aborted %d unfinished uploads left by earlier runs", len(stale))

    def have(key: str) -> bool:
        return not force and load_record(st, key) is not None

    outcomes: dict[str, Outcome] = {}
    weights: dict[str, PrefectFuture] = {}
    for wb in plan.weight_builds.values():
        if have(wb.key):
            outcomes[wb.key] = Outcome(status="reused")
        else:
            weights[wb.key] = build_weights.submit(st.url, wb, srcs[wb.model], loaded.matrix.convert_device)
    libs: dict[str, PrefectFuture] = {}
    pending = []
    for lb in plan.lib_builds.values():
        if have(lb.key):
            outcomes[lb.key] = Outcome(status="reused")
        else:
            pending.append(lb)

    def submit_ready() -> None:
        # A library compiles the config of the first of its weight builds that is available.
        for lb in list(pending):
            ready = next((k for k in lb.config_from if _usable(outcomes.get(k))), None)
            if ready:
                libs[lb.key] = build_library.submit(st.url, lb, ready)
                pending.remove(lb)

    submit_ready()
    for future in as_completed(list(weights.values())):
        key = next(k for k, f in weights.items() if f is future)
        outcomes[key] = _outcome(future)
        submit_ready()
    for lb in pending:
        outcomes[lb.key] = Outcome(status="skipped", detail="none of its models' weights could be built")
    outcomes |= {key: _outcome(f) for key, f in libs.items()}
    for key, o in outcomes.items():
        if o.status in ("built", "reused"):
            record = load_record(st, key)
            o.log = f"{st.url}/blobs/sha256/{record.log.sha256}" if record and record.log else None
    update_catalog(st.url, plan, srcs)

    summary = summarize(plan, outcomes)
    _report(summary)
    failed = summary.failed
    message = f"{len(summary.rows)} cells: " + ", ".join(f"{n} {s}" for s, n in sorted(summary.counts().items()))
    publish_failures = _publish(targets, st.url, {(r.model, r.quantization) for r in failed})
    if publish_failures:
        message += f"; {publish_failures} publish failed"
    if failed or publish_failures:
        return Failed(message=f"{len(failed)} of {len(summary.rows)} cells failed; {message}", data=summary)
    return Completed(message=message, data=summary)


def _publish(
    targets: dict[tuple[str, str], tuple[str, bool] | None], store_url: str, failed_units: set[tuple[str, str]]
) -> int:
    """Publish every model x quantization whose cells all succeeded (a partial set would delete libraries
    from the Hub); returns how many failed."""
    futures = {
        target[0]: publish_unit.submit(store_url, model, quant, *target)
        for (model, quant), target in targets.items()
        if target and (model, quant) not in failed_units
    }
    if not futures:
        return 0
    rows, failures = [], 0
    console = Console(width=160)
    for repo, future in futures.items():
        future.wait()
        try:
            result = future.result()
        except Exception as e:
            failures += 1
            rows.append({"repo": repo, "result": "failed", "detail": str(e)})
            console.print(f"[red]PUBLISH FAILED[/] {repo}: {e}", soft_wrap=True, highlight=False)
            continue
        done = f"commit {result.commit}" if result.commit else "unchanged, no commit"
        detail = f"{len(result.operations)} operations, {result.unchanged} files unchanged"
        rows.append({"repo": repo, "result": done, "detail": detail})
        console.print(f"published {repo}: {done} ({detail})", soft_wrap=True, highlight=False)
    create_table_artifact(key="mlc-farm-publish", table=rows, description="Hugging Face repos of this run.")
    return failures


def _report(summary: Summary) -> None:
    create_table_artifact(
        key="mlc-farm-build-summary",
        table=[r.model_dump() for r in summary.rows],
        description="Every cell of the matrix: built, reused or failed, and where its log is.",
    )
    console = Console(width=160)
    console.print(summary.table())
    for r in summary.failed:
        console.print(
            f"[red]FAILED[/] {r.model}/{r.quantization}/{r.device}: {r.detail}"
            + (f"\n  log: {r.log}" if r.log else ""),
            soft_wrap=True,
            highlight=False,
        )


if __name__ == "__main__":
    import sys

    nightly_build(sys.argv[1] if len(sys.argv) > 1 else "matrix.yaml")
