"""The set-up scripts as a new user runs them: install-mlc.sh never falls back to PyPI's empty placeholders,
and the quick start ends cleanly after the plan where the real mlc_llm cannot be installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def script(
    name: str, *args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLC_FARM_MLC_LLM", *drop)}  # no double
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / name), *args], capture_output=True, text=True, cwd=ROOT,
        env=clean | (env or {}), timeout=600,
    )  # fmt: skip


def placeholders_installed() -> bool:
    shown = subprocess.run([str(VENV_PYTHON), "-m", "pip", "show", "mlc-llm-nightly-cpu", "mlc-ai-nightly-cpu"],
                           capture_output=True, text=True)  # fmt: skip
    return shown.returncode == 0


def test_install_mlc_refuses_an_unreachable_index() -> None:
    done = script("install-mlc.sh", "cpu", env={"MLC_WHEEL_INDEX": "http://127.0.0.1:9/wheels"})
    assert done.returncode == 1
    assert "the MLC wheel index http://127.0.0.1:9/wheels cannot be reached" in done.stderr
    assert "empty placeholders and are never installed instead" in done.stderr
    assert not placeholders_installed()


def test_install_mlc_refuses_an_index_without_the_wheel(tmp_path: Path) -> None:
    (tmp_path / "mlc_ai_nightly_cu128-0.20.dev1-py3-none-any.whl").write_bytes(b"")  # another flavour only
    done = script("install-mlc.sh", "cpu", env={"MLC_WHEEL_INDEX": str(tmp_path)})
    assert done.returncode == 1
    assert f"{tmp_path} has no mlc-llm-nightly-cpu / mlc-ai-nightly-cpu wheel for Python 3." in done.stderr
    assert "nothing was installed" in done.stderr and not placeholders_installed()
    assert script("install-mlc.sh", "cu99").returncode == 2


@pytest.mark.slow
def test_quickstart_without_mlc_llm_ends_after_the_plan() -> None:
    offline = {"MLC_WHEEL_INDEX": "http://127.0.0.1:9/wheels", "HF_HUB_OFFLINE": "1"}
    done = script("quickstart.sh", env=offline)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "plan for examples/tiny-cpu.yaml" in done.stdout
    assert "installing the CPU wheels from the MLC wheel index" in done.stdout
    assert "cannot be reached from this machine" in done.stderr
    assert "the quick start ends here, without the real mlc_llm" in done.stdout
    assert "source .venv/bin/activate" in done.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_quickstart_with_a_failed_cell_still_lists_what_was_built(tmp_path: Path) -> None:
    from tests.helpers import DOUBLE

    env = {"PYTHONPATH": str(DOUBLE), "MLC_DOUBLE_FAIL": "compile:vulkan", "HF_HUB_OFFLINE": "1",
           "MLC_FARM_STORE": str(tmp_path / "store"), "MLC_FARM_WORK_DIR": str(tmp_path / "work")}  # fmt: skip
    done = script("quickstart.sh", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "catalog" in done.stdout and "tiny-llama-a" in done.stdout.split("catalog", 1)[1]  # `ls` ran
    assert "source .venv/bin/activate" in done.stdout  # and the hint
    assert "the build ended with exit code 1" in done.stdout


@pytest.mark.slow
def test_local_s3_writes_pasteable_exports_without_printing_the_secret(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    from mlc_farm.farm.stack import free_ports

    (port,) = free_ports(1)
    env = {**os.environ, "AWS_SECRET_ACCESS_KEY": "never-printed-secret"}
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "local-s3.sh"), str(tmp_path / "s3"), str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline, up = time.monotonic() + 120, False
        while not up and time.monotonic() < deadline:
            try:
                up = httpx.get(f"http://127.0.0.1:{port}", timeout=2).status_code in (200, 403)
            except httpx.HTTPError:
                time.sleep(0.5)
        assert up
        exports = tmp_path / "s3" / "env.sh"
        assert exports.stat().st_mode & 0o777 == 0o600
        sourced = subprocess.run(["bash", "-c", f"source {exports} && echo $AWS_SECRET_ACCESS_KEY $MLC_FARM_STORE"],
                                 capture_output=True, text=True)  # fmt: skip
        assert sourced.stdout.split() == ["never-printed-secret", "s3://mlc-farm/artifacts"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert f"source {tmp_path / 's3' / 'env.sh'}" in output and "never-printed-secret" not in output
    # weed's own S3 socket, which it made in /tmp and left there when stopped, went with it
    assert not Path(f"/tmp/seaweedfs-s3-{port}.sock").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def tour() -> list[str]:
    """The commands of README.md's five-minute tour, as printed there."""
    text = (ROOT / "README.md").read_text().split("## A five-minute tour", 1)[1]
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_newcomer_without_the_wheels_sees_a_build_with_the_stand_in_and_goes_on_from_it(tmp_path: Path) -> None:
    """The quick start's next steps and README's tour run as printed, in a new shell with no variable of the
    farm's: the settings file the quick start wrote says where the store and the stand-in are. The tour runs in a
    view of the clone (its .venv and examples linked, the settings file in it) so that the test writes nothing
    into the clone; HOME stands in for the user's (their cache holds this machine's signing key)."""
    view, home = tmp_path / "clone", tmp_path / "home"
    for name in (".venv", "examples"):
        (view / name).parent.mkdir(parents=True, exist_ok=True)
        (view / name).symlink_to(ROOT / name)
    env = {"HF_HUB_OFFLINE": "1", "MLC_FARM_STORE": str(tmp_path / "store"), "MLC_FARM_WORK_DIR": str(tmp_path / "w"),
           "MLC_FARM_SETTINGS_FILE": str(view / "mlc-farm.env"), "HOME": str(home)}  # fmt: skip
    done = script("quickstart.sh", "--stand-in", env=env, drop=("MLC_FARM_SIGNING_KEY", "MLC_FARM_CACHE"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("A STAND-IN, not MLC") and "8 cells: 8 ok" in done.stdout
    assert "tiny-llama-b" in done.stdout.split("catalog", 1)[1] and not (ROOT / "artifacts-stand-in").exists()
    printed = done.stdout.split("Next, in a new shell", 1)[1]
    next_steps = [line.split("  #")[0].strip() for line in printed.splitlines()[1:] if line.startswith("  mlc-farm")]
    assert len(next_steps) == 3 and set(next_steps) <= set(tour()), (next_steps, tour())
    new_shell = {k: v for k, v in os.environ.items() if not k.startswith(("MLC_FARM_", "MLC_DOUBLE", "PYTHONPATH"))}
    new_shell |= {"HOME": str(home), "HF_HUB_OFFLINE": "1", "MLC_LLM_HOME": str(tmp_path / "mlc-llm-home")}
    for line in [*tour(), "mlc-farm install tiny-llama-a q4f16_1 --device cpu"]:
        ran = subprocess.run(["bash", "-c", f"source .venv/bin/activate && {line}"], capture_output=True, text=True,
                             cwd=view, env=new_shell, timeout=300)  # fmt: skip
        assert ran.returncode == 0, (line, ran.stdout[-2000:], ran.stderr[-2000:])
        assert "Traceback" not in ran.stdout + ran.stderr
    assert (tmp_path / "store" / "index.html").is_file() and (view / "tiny-llama-a-q4f16_1" / "model.sig").is_file()
    planned = subprocess.run(["bash", "-c", "source .venv/bin/activate && mlc-farm plan --matrix examples/tiny-cpu.yaml"],
                             capture_output=True, text=True, cwd=view, env=new_shell, timeout=300)  # fmt: skip
    assert "4 convert builds (4 in store)" in planned.stdout, planned.stdout  # the second build is a no-op
