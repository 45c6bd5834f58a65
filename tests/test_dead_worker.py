"""Farm mode survives its workers (issue 31, item 6), on the suite's Prefect server: a worker killed mid-build
with everything it started (a node lost, an OOM-killed pod whose worker went with it) sends no more heartbeats;
the zombie automation sets its run Crashed, the nightly names the cell and why, and the next nightly rebuilds
it without redoing its weights."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from mlc_farm.farm.stack import start_worker
from tests.helpers import ROOT, WAITS_ON_PREFECT, cli, prefect, toolchain_calls, without_pools

pytestmark = [pytest.mark.slow, WAITS_ON_PREFECT]

MATRIX = """
quantizations: [q4f16_1]
weights_pool: mlc-cpu
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cuda}
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""
# Prefect's heartbeats come every 30 s at the most often; the farm's automation waits 90 s (three missed). The
# test's waits 40 s: the same automation, shorter to wait out.
SILENT = timedelta(seconds=40)


def _tree(pid: int) -> list[int]:
    """`pid` and every process it started, however deep (each toolchain step runs in a session of its own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo.extend(children.get(found[-1], []))
    return found


def _kill_when_compiling(calls: Path, worker_pid: int, killed: list[float]) -> None:
    """SIGKILL the worker and all it started once the library's compile has begun (the double hangs in it)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any(c["step"] == "compile" for c in toolchain_calls(calls)):
            for pid in _tree(worker_pid):
                os.kill(pid, signal.SIGKILL)
            killed.append(time.monotonic())
            return
        time.sleep(0.5)


def _a_retried_dispatch_reuses_its_run(store: str) -> None:
    """A nightly retried by Prefect keeps its flow run id: the dispatch of a build it had started finds that
    child run (its idempotency key: the nightly's run, the deployment, the build key) instead of a second one."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from mlc_farm.tasks.dispatch import dispatch

    with get_client(sync_client=True) as client:
        only = DeploymentFilter(name=DeploymentFilterName(any_=["mlc-cuda"]))
        [done] = [r for r in client.read_flow_runs(deployment_filter=only) if r.state and r.state.is_completed()
                  and r.name.startswith("library")][:1]  # fmt: skip
        before = len(client.read_flow_runs(deployment_filter=only))

    @flow(retries=0, name="retried-nightly")
    def retried() -> list[str]:
        key = done.parameters["lb"]["key"]
        return [dispatch.fn("build-library/mlc-cuda", done.parameters, key, store).key for _ in range(2)]

    assert len(set(retried())) == 1
    with get_client(sync_client=True) as client:
        assert len(client.read_flow_runs(deployment_filter=only)) == before + 1  # one child run for two dispatches


def test_a_worker_killed_mid_build_is_crashed_named_and_rebuilt_by_the_next_nightly(
    prefect_api: str, tiny_models: Path, tmp_path: Path
) -> None:
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from mlc_farm.farm.pools import ZOMBIE_AUTOMATION, idle_pools, zombie_automation
    from mlc_farm.flows.nightly import nightly_build

    matrix = tiny_models / f"dead-{tmp_path.name}.yaml"
    matrix.write_text(MATRIX)
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    env = {"MLC_FARM_HOME": str(ROOT), "MLC_FARM_STORE": str(store), "MLC_DOUBLE_LOG": str(calls)}
    without_pools()
    # The dead run's compile slot lapses COMPILE_SLOT_LEASE after its last renewal: a second GPU spares the test
    # that wait (the run's crash is what is tested here).
    made = cli("farm", "init", "--matrix", str(matrix), "--gpus", "2", env=env)
    assert made.returncode == 0 and ZOMBIE_AUTOMATION in made.stdout, made.stdout + made.stderr
    zombie = Automation.read(name=ZOMBIE_AUTOMATION)
    zombie_automation(SILENT).model_copy(update={"id": zombie.id}).update()
    # prefect.yaml deploys to all three pools: the one this matrix does not use is made here.
    assert prefect("work-pool", "create", "mlc-rocm", "--type", "process", "--overwrite", env=env).returncode == 0
    deployed = prefect("deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # No nightly on the suite's server: its schedule would start one if the suite ran at 02:00.
    assert prefect("deployment", "delete", "nightly-build/nightly", env=env).returncode == 0

    home = tmp_path / "prefect"
    weights = start_worker(home, prefect_api, "mlc-cpu", env)
    doomed = start_worker(home, prefect_api, "mlc-cuda", env | {"MLC_DOUBLE_HANG": "compile"})
    workers = [weights, doomed]
    try:
        deadline = time.monotonic() + 120
        while idle_pools(["mlc-cpu", "mlc-cuda"]) and time.monotonic() < deadline:
            time.sleep(1)
        killed: list[float] = []
        killer = threading.Thread(target=_kill_when_compiling, args=(calls, doomed.pid, killed), daemon=True)
        killer.start()
        state = nightly_build(str(matrix), store=str(store), mode="farm", return_state=True)
        killer.join()
        assert killed, "the library's compile never started"
        waited = time.monotonic() - killed[0]
        said = state.message or ""
        assert state.is_failed(), said
        assert "tiny-llama-a" in said and "cpu" in said and "ended Crashed" in said, said
        assert "no heartbeat for 40 s: its worker died" in said, said
        # Crashed once the automation's window passed after the last heartbeat (< 30 s before the kill).
        assert waited < SILENT.total_seconds() + 45, waited

        converts = sum(c["step"] == "convert_weight" for c in toolchain_calls(calls))
        workers.append(start_worker(home, prefect_api, "mlc-cuda", env))  # the pool's next worker
        deadline = time.monotonic() + 120
        while idle_pools(["mlc-cuda"]) and time.monotonic() < deadline:
            time.sleep(1)
        again = nightly_build(str(matrix), store=str(store), mode="farm", return_state=True)
        assert again.is_completed(), again.message
        assert sum(c["step"] == "convert_weight" for c in toolchain_calls(calls)) == converts  # weights kept
        with get_client(sync_client=True) as client:  # the nightlies, not of a farm pool, were never crashed
            for nightly in (state, again):
                states = client.read_flow_run_states(nightly.state_details.flow_run_id)
                assert StateType.CRASHED not in [s.type for s in states]
        listed = cli("ls", "--store", str(store), env=env)
        assert listed.returncode == 0 and "tiny-llama-a" in listed.stdout, listed.stdout + listed.stderr
        _a_retried_dispatch_reuses_its_run(str(store))
    finally:
        for worker in workers:
            worker.stop()
        zombie.delete()
