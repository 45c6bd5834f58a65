"""Farm mode end to end: real PostgreSQL, a real Prefect server on it, SeaweedFS, process workers on three
pools (two standing in for the GPU pools), deployments from prefect.yaml, and the toolchain double."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import POOLS, ROOT, WAITS_ON_PREFECT, cli, prefect, s3_client, toolchain_calls, unhashed

pytestmark = [pytest.mark.slow, WAITS_ON_PREFECT]

FARM_MATRIX = """
quantizations: [q4f16_1]
weights_pool: mlc-cpu
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cuda}
  - {name: vulkan, family: vulkan, target: "vulkan:generic", pool: mlc-rocm}
models:
  - {id: tiny-llama-a, source: {path: models/a}, conv_template: LM}
  - {id: tiny-llama-b, source: {path: models/b}, conv_template: LM}
"""


@pytest.fixture
def farm(tmp_path: Path, tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict]]:
    """`mlc-farm farm up` for the test matrix (workers get the toolchain double from this environment)."""
    matrix = tiny_models / f"farm-{tmp_path.name}.yaml"
    matrix.write_text(FARM_MATRIX)
    calls, state = tmp_path / "calls.log", tmp_path / "farm"
    # The workers' toolchain fails tiny-llama-b's weights: a failed build in farm mode.
    worker_env = {"MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_FAIL": "convert_weight:tiny-llama-b"}
    # The quick start's settings file (its stand-in store) is where `farm up` names the farm for a new shell.
    settings = tmp_path / "mlc-farm.env"
    settings.write_text(f"MLC_FARM_STORE='{tmp_path / 'artifacts-stand-in'}'\n")
    monkeypatch.setenv("MLC_FARM_SETTINGS_FILE", str(settings))
    up = cli("farm", "up", "--dir", str(state), "--matrix", str(matrix), env=worker_env)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        exports = (state / "env.sh").read_text().splitlines()
        env = dict(line.removeprefix("export ").split("=", 1) for line in exports) | {"MLC_DOUBLE_LOG": str(calls)}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        yield matrix, env
    finally:
        assert cli("farm", "down", "--dir", str(state)).returncode == 0
        assert not (state / "stack.json").exists()
        assert settings.read_text() == f"MLC_FARM_STORE='{tmp_path / 'artifacts-stand-in'}'\n"  # as it was


def test_build_model_deployment_sends_each_build_to_its_pool(farm, tmp_path: Path) -> None:
    matrix, env = farm
    store = env["MLC_FARM_STORE"]
    assert store == "s3://mlc-farm/artifacts" and env["MLC_FARM_HOME"] == str(ROOT)

    init = cli("farm", "init", "--matrix", str(matrix), "--gpus", "1", "--pool-limit", "4", env=env)
    assert init.returncode == 0, init.stderr
    assert cli("farm", "init", "--matrix", str(matrix), env=env).returncode == 0  # idempotent
    deployed = prefect("deploy", "--all", env=env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    bad = prefect("deployment", "run", "build-model/build-model", "--param", "force=maybe", env=env)
    assert bad.returncode != 0  # enforce_parameter_schema: model is required, force must be a boolean

    run = prefect(
        "deployment", "run", "build-model/build-model", "--param", "model=tiny-llama-a",
        "--param", f"matrix_path={matrix}", "--param", f"store={store}", "--watch", env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # This process talks to the shared test server (tests/conftest.py); ask the farm's server instead.
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        flows = {f.id: f.name for f in client.read_flows()}
        nightly = client.read_deployment_by_name("nightly-build/nightly")
        assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"]
        assert nightly.schedules[0].schedule.timezone == "UTC"
        limits = {lim.name: lim.limit for lim in client.read_global_concurrency_limits()}
    assert {"mlc-compile-mlc-cuda": 1, "mlc-compile-mlc-rocm": 1}.items() <= limits.items()

    ran = [(flows[r.flow_id], r.work_pool_name, r.parameters, r.state.name) for r in runs]
    assert all(state == "Completed" for *_, state in ran), ran
    # The convert, config and fidelity reference builds of tiny-llama-a/q4f16_1, all on the weights pool.
    weights = sorted((p["build"]["kind"], pool) for name, pool, p, _ in ran if name == "build-weights")
    assert weights == [("config", "mlc-cpu"), ("convert", "mlc-cpu"), ("reference", "mlc-cpu")]
    # Each library, and each cell's check (its run and fidelity), on its device's pool.
    on_device = {
        (p["lb"]["kind"], p["lb"]["device"]["name"]): pool for name, pool, p, _ in ran if name == "build-library"
    }
    assert on_device == {("library", "cpu"): "mlc-cuda", ("library", "vulkan"): "mlc-rocm",
                         ("check", "cpu"): "mlc-cuda", ("check", "vulkan"): "mlc-rocm"}  # fmt: skip
    assert sorted(pool for name, pool, *_ in ran if name == "probe-toolchain") == POOLS
    assert [pool for name, pool, *_ in ran if name == "build-model"] == ["mlc-cpu"]

    calls = toolchain_calls(Path(env["MLC_DOUBLE_LOG"]))
    steps = sorted(c["step"] for c in calls if "mlc-farm-twin-" not in " ".join(c["argv"]))
    assert steps == ["compile", "compile", "convert_weight", "gen_config"]
    assert sum("mlc-farm-twin-" in " ".join(c["argv"]) for c in calls) == 1  # the one conversion class's twin
    keys = [o["Key"] for o in s3_client().list_objects_v2(Bucket="mlc-farm")["Contents"]]
    assert "artifacts/catalog/tiny-llama-a/q4f16_1.json" in keys
    assert (
        sum(k.startswith("artifacts/builds/") for k in keys) == 7
    )  # convert, config, 2 libraries, reference, 2 checks
    assert cli("verify", "--store", store, env=env).returncode == 0
    out = tmp_path / "pulled"
    assert cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(out), "--store", store, env=env).returncode == 0
    assert sorted(unhashed(p.name) for p in (out / "libs").iterdir()) == [
        "tiny-llama-a-q4f16_1-cpu.so", "tiny-llama-a-q4f16_1-vulkan.so",
    ]  # fmt: skip

    # A new shell without env.sh goes on: the settings file names the farm's store, blocks and API, no secret.
    named = Path(os.environ["MLC_FARM_SETTINGS_FILE"]).read_text()
    assert env["AWS_SECRET_ACCESS_KEY"] not in named and f"PREFECT_API_URL='{env['PREFECT_API_URL']}'" in named
    bare = {k: v for k, v in os.environ.items() if k not in env and not k.startswith(("AWS_", "PREFECT_"))}
    for args in (["ls"], ["pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "again")],
                 ["verify-signature", str(tmp_path / "again")], ["history", "tiny-llama-a", "q4f16_1"]):  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "mlc_farm.cli", *args], capture_output=True, text=True,
                              env=bare, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        assert "tiny-llama-a" in done.stdout or args[0] != "ls", done.stdout

    # A build that fails on a worker: the run's summary links the worker's log, and `mlc-farm log` prints it.
    failed = prefect(
        "deployment", "run", "build-model/build-model", "--param", "model=tiny-llama-b",
        "--param", f"matrix_path={matrix}", "--param", f"store={store}", "--watch", env=env,
    )  # fmt: skip
    assert failed.returncode != 0
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        tables = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["mlc-farm-build-summary"]))
        )
        rows = json.loads(max(tables, key=lambda a: a.created).data)
    [row] = [r for r in rows if r["model"] == "tiny-llama-b" and r["device"] == "cpu"]
    assert row["convert"] == "failed" and row["log"].startswith(f"{store}/blobs/sha256/"), row
    assert "injected failure in convert_weight" in row["detail"]
    shown = cli("log", "tiny-llama-b", "q4f16_1", "--store", store, env=env)
    assert shown.returncode == 0 and "injected failure in convert_weight" in shown.stdout, shown.stderr


ONE_POOL = """
quantizations: [q4f16_1]
weights_pool: mlc-cpu
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cpu}
models:
  - {id: tiny-llama-a, source: {path: models/a}, conv_template: LM}
"""


def test_farm_up_is_idempotent_and_down_deletes_data_unless_kept(
    tmp_path: Path, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    from mlc_farm.farm.stack import LocalStack, postgres_root, unix_sockets

    matrix, state = tiny_models / f"one-{tmp_path.name}.yaml", tmp_path / "farm"
    matrix.write_text(ONE_POOL)
    settings = tmp_path / "mlc-farm.env"
    monkeypatch.setenv("MLC_FARM_SETTINGS_FILE", str(settings))

    def up() -> subprocess.CompletedProcess:
        done = cli("farm", "up", "--dir", str(state), "--matrix", str(matrix))
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout + done.stderr
        return done

    def s3(env: dict):
        return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")  # fmt: skip

    def exports() -> dict:
        lines = (state / "env.sh").read_text().splitlines()
        return dict(line.removeprefix("export ").split("=", 1) for line in lines)

    try:
        up()
        assert oct((state / "env.sh").stat().st_mode & 0o777) == "0o600"
        first = LocalStack.load(state)
        again = up()
        assert f"stack already up from {state}" in again.stdout
        assert [s.pid for s in LocalStack.load(state).services] == [s.pid for s in first.services]  # reused
        env = exports()
        s3(env).put_object(Bucket="mlc-farm", Key="artifacts/kept.txt", Body=b"kept")
        assert cli("farm", "init", "--matrix", str(matrix), env=env).returncode == 0

        assert "PREFECT_API_URL=" in settings.read_text()  # the settings file `farm up` wrote names the farm
        kept = cli("farm", "down", "--dir", str(state), "--keep-data")
        assert kept.returncode == 0 and "its data stays" in kept.stdout
        assert not settings.exists()  # it held nothing else
        up()
        env = exports()
        assert s3(env).get_object(Bucket="mlc-farm", Key="artifacts/kept.txt")["Body"].read() == b"kept"
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
            assert client.read_work_pool("mlc-cpu").name == "mlc-cpu"  # the database was kept

        seaweed = next(s for s in LocalStack.load(state).services if s.name == "seaweedfs")
        ports = re.findall(r"port(?:\.grpc)?=(\d+)", Path(f"/proc/{seaweed.pid}/cmdline").read_text())
        os.killpg(seaweed.pid, 9)
        for port in ports:  # the sockets a SIGKILL leaves in /tmp are this test's to remove
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                path.unlink()
        restarted = up()
        assert "has stopped services: starting it again on its data" in restarted.stdout
        assert s3(exports()).get_object(Bucket="mlc-farm", Key="artifacts/kept.txt")["Body"].read() == b"kept"
        seaweed = next(s for s in LocalStack.load(state).services if s.name == "seaweedfs")
        held = unix_sockets(seaweed.pid)
    finally:
        if (state / "stack.json").exists():
            down = cli("farm", "down", "--dir", str(state))
            assert down.returncode == 0 and "deleted its data" in down.stdout, down.stdout + down.stderr
    assert not (state / "seaweedfs").exists() and not (state / "env.sh").exists()
    # SeaweedFS makes its sockets in /tmp whatever TMPDIR says, and leaves them: `farm down` removes them.
    assert held and [path for path in held if path.exists()] == []
    assert not postgres_root(state / "postgres").exists() and not (state / "postgres").exists()
