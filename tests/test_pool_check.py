"""`mlc-farm farm check-pool` on the suite's Prefect server: process workers on three pools (one standing in for
a CUDA pool, one whose image lacks nvcc), the deployments of prefect.yaml, and the toolchain double."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mlc_farm.farm.stack import start_worker
from tests.helpers import POOLS, ROOT, WAITS_ON_PREFECT, cli, prefect, without_pools

MATRIX = """
quantizations: [q4f16_1, q0f16]
weights_pool: mlc-cpu
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cuda}
  - {name: h100, family: cuda, target: '{"kind":"cuda","arch":"sm_90"}', pool: mlc-cuda}
  - {name: a100, family: cuda, target: '{"kind":"cuda","arch":"sm_80"}', cuda_archs: ['80', '90'], pool: mlc-rocm}
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""


@pytest.mark.slow
@WAITS_ON_PREFECT
def test_check_pool_reports_a_working_pool_and_names_what_a_broken_one_lacks(
    prefect_api: str, tiny_models: Path, tmp_path: Path
) -> None:
    from mlc_farm.farm.pools import idle_pools

    matrix = tiny_models / f"pools-{tmp_path.name}.yaml"
    matrix.write_text(MATRIX)
    env = {"MLC_FARM_HOME": str(ROOT), "MLC_FARM_STORE": str(tmp_path / "store")}
    without_pools()
    assert cli("farm", "init", "--matrix", str(matrix), env=env).returncode == 0
    deployed = prefect("deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # No nightly on the suite's server: its schedule would start one if the suite ran at 02:00.
    assert prefect("deployment", "delete", "nightly-build/nightly", env=env).returncode == 0
    check = ("farm", "check-pool", "mlc-cuda", "--matrix", str(matrix))
    idle = cli("farm", "init", "--matrix", str(matrix), "--check-pools", env=env)  # the pools made, no worker yet
    assert idle.returncode == 3 and "no worker is polling pool mlc-cpu" in idle.stderr, idle.stderr

    # The mlc-rocm pool's workers compile without the NVIDIA driver (its libraries hold CUDA source only) and its
    # TVM has no cuBLAS (the matrix's q0f16 at the default opt needs it).
    broken_pool = {"MLC_DOUBLE_NO_DRIVER": "1", "MLC_DOUBLE_NO_OFFLOAD": "cublas"}
    workers = [start_worker(tmp_path / "prefect", prefect_api, pool, {**env, **extra}) for pool, extra in
               (("mlc-cpu", {}), ("mlc-cuda", {}), ("mlc-rocm", broken_pool))]  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while idle_pools(POOLS) and time.monotonic() < deadline:
            time.sleep(1)
        works = cli(*check, env=env, timeout=900)
        said = works.stdout
        assert works.returncode == 0, works.stdout + works.stderr
        assert "pool mlc-cuda works" in said and "nvcc: Cuda compilation tools" in said and "offload: " in said
        assert "device cpu: built; fits; ran on cpu" in said and "fidelity passed" in said
        assert "decode " in said and "TVM VM decode: steps after" in said and "TVM VM prefill" in said
        assert "device h100: built; fit not checked; not run: no cuda device" in said  # no GPU on this worker
        assert "its library holds sm_90" in said
        assert "| INFO" not in said + works.stderr and "Finished in state" not in said + works.stderr  # its answer only
        # Beside the farm's store, never in it.
        assert (tmp_path / "store-pool-check" / "catalog").is_dir() and not (tmp_path / "store").exists()

        broken = cli("farm", "check-pool", "mlc-rocm", "--matrix", str(matrix), env=env, timeout=900)
        said = " ".join(broken.stdout.split())
        assert broken.returncode == 1, broken.stdout + broken.stderr
        assert (
            "offload: cublas no" in said and "a100 (q0f16): its opt (the default, O2) compiles with cublas_gemm" in said
        )
        assert "device a100: FAILED" in said and "holds the CUDA source only" in said and "libcuda.so.1" in said
        assert "pool mlc-rocm does not work" in said, said

        # A weights pool whose workers cannot import mlc_llm: a farm run ends Failed and says why where a user
        # looks (issue 39, item 2): the log `--watch` streams, and the state message the UI shows.
        workers[0].stop()
        workers[0] = start_worker(tmp_path / "prefect", prefect_api, "mlc-cpu", {**env, "PYTHONPATH": ""})
        run = ("deployment", "run", "build-model/build-model", "--param", "model=tiny-llama-a", "--param",
               f"matrix_path={matrix}", "--watch", "--watch-timeout", "600")  # fmt: skip
        failed = prefect(*run, env=env)
        shown = " ".join((failed.stdout + failed.stderr).split())  # the console wraps the log's lines
        assert failed.returncode == 1 and "Flow run finished in state 'Failed'" in shown, shown
        reason = "toolchain unavailable: pool mlc-cpu: mlc_llm is not importable"
        assert reason in shown and "Traceback" not in shown, shown  # the log streamed, before the state
        state, logs = last_run("build-model")
        assert (state.message or "").startswith(reason)
        # Prefect's own report of a failed run ends in the run's reason; no error of the farm's making (a final
        # state Prefect cannot read was `TypeError: Unexpected result for failed state`).
        assert logs[0].startswith(reason) and not [line for line in logs if "TypeError" in line], logs
    finally:
        for worker in workers:
            worker.stop()


def last_run(flow: str) -> tuple[Any, list[str]]:
    """The newest run of `flow` on the suite's server: its state and its log lines."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow])),
                                      sort=FlowRunSort.START_TIME_DESC, limit=1)  # fmt: skip
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
    return run.state, [log.message for log in logs]
