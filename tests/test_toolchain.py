"""The toolchain adapter: exact commands, version probe, log capture, failures and timeouts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from mlc_farm.errors import ToolchainError
from mlc_farm.matrix.schema import DeviceSpec, Overrides
from mlc_farm.toolchain.commands import compile_args, compile_env, convert_weight_args, gen_config_args
from mlc_farm.toolchain.invoke import command, command_env, run
from mlc_farm.toolchain.probe import probe
from mlc_farm.toolchain.process import clean_line
from tests.helpers import DOUBLE

CUDA = DeviceSpec(
    name="cuda-multi", family="cuda", target='{"kind":"cuda","arch":"sm_80"}', cuda_archs=["80", "90a"], opt="O3"
)


def test_commands_follow_the_reference() -> None:
    src, out = Path("/m"), Path("/o")
    assert convert_weight_args(src, "q4f16_1", out, "cpu", None) == [
        "convert_weight", "/m", "--quantization", "q4f16_1", "--device", "cpu", "-o", "/o",
    ]  # fmt: skip
    over = Overrides(context_window_size=4096, prefill_chunk_size=1024)
    assert gen_config_args(src, "q0f16", "llama-3", over, out, "llama") == [
        "gen_config", "/m", "--quantization", "q0f16", "--conv-template", "llama-3",
        "--context-window-size", "4096", "--prefill-chunk-size", "1024", "--model-type", "llama", "-o", "/o",
    ]  # fmt: skip
    assert compile_args(Path("/o/mlc-chat-config.json"), CUDA, over, Path("/l.so")) == [
        "compile", "/o/mlc-chat-config.json", "--device", '{"kind":"cuda","arch":"sm_80"}',
        "--host", "x86_64-unknown-linux-gnu", "--opt", "O3",
        "--overrides", "context_window_size=4096;prefill_chunk_size=1024", "-o", "/l.so",
    ]  # fmt: skip
    assert compile_env(CUDA) == {"MLC_MULTI_ARCH": "80,90a"}


def test_command_is_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert command() == [sys.executable, "-m", "mlc_llm"]
    monkeypatch.setenv("MLC_FARM_MLC_LLM", "/opt/mlc/bin/python -m mlc_llm")
    assert command() == ["/opt/mlc/bin/python", "-m", "mlc_llm"]
    monkeypatch.setenv("MLC_FARM_MLC_LLM", "LD_LIBRARY_PATH=/opt/rocm/lib 'A_B=x y' /opt/mlc/bin/python -m mlc_llm")
    assert command() == ["/opt/mlc/bin/python", "-m", "mlc_llm"]
    assert command_env() == {"LD_LIBRARY_PATH": "/opt/rocm/lib", "A_B": "x y"}


def test_the_commands_environment_reaches_its_steps_and_scripts(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick start's stand-in is `PYTHONPATH=tests/double python -m mlc_llm`: with no PYTHONPATH of the
    farm's own, the steps, the probe and the scripts in the toolchain's interpreter all find the double."""
    double = str(DOUBLE)
    monkeypatch.delenv("PYTHONPATH")
    monkeypatch.setenv("MLC_FARM_MLC_LLM", f"PYTHONPATH={double} MLC_DOUBLE_ENV_DUMP={tmp_path / 'env.log'} "
                                           f"{sys.executable} -m mlc_llm")  # fmt: skip
    assert probe().known
    args = convert_weight_args(model_a, "q4f16_1", tmp_path / "o", "cpu", None)
    run("convert_weight", args, cell="a/q4f16_1", log_path=tmp_path / "l.log", timeout=60)
    seen = json.loads((tmp_path / "env.log").read_text().splitlines()[-1])
    assert seen["PYTHONPATH"] == double


def test_probe_reads_versions_from_the_toolchain_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    info = probe()
    assert info.known and info.mlc_llm_version == "0.20.0.dev0" and info.tvm_commit.startswith("7e57")
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")
    assert probe().mlc_llm_version == "0.21.0.dev1"


def test_missing_mlc_llm_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "mlc").mkdir()  # what the PyPI placeholder wheels install
    (tmp_path / "mlc" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    info = probe()
    assert not info.known
    assert "mlc_llm is not importable" in info.error and "found the placeholder package `mlc`" in info.error
    assert "-f https://mlc.ai/wheels mlc-llm-nightly-cpu mlc-ai-nightly-cpu" in info.error
    assert info.describe().startswith("unknown (")


def test_run_streams_and_keeps_the_log(model_a: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    log = tmp_path / "build.log"
    args = convert_weight_args(model_a, "q4f16_1", tmp_path / "o", "cpu", None)
    run("convert_weight", args, cell="a/q4f16_1", log_path=log, timeout=60, on_line=lines.append)
    assert any("Saved to directory" in line for line in lines)
    text = log.read_text()
    assert text.startswith("$ ") and "convert_weight" in text.splitlines()[0] and "Saved to directory" in text


def test_failure_names_step_cell_exit_code_and_log_tail(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_DOUBLE_FAIL", "convert_weight")
    args = convert_weight_args(model_a, "q4f16_1", tmp_path / "o", "cpu", None)
    with pytest.raises(ToolchainError) as info:
        run("convert_weight", args, cell="a/q4f16_1", log_path=tmp_path / "l.log", timeout=60)
    message = str(info.value)
    assert message.startswith("convert_weight failed for a/q4f16_1: exit code 1")
    assert "| ValueError: injected failure in convert_weight" in message
    assert "working 39" in message and "working 5\n" not in message  # the tail, not the whole log


def test_timeout_kills_the_step(model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLC_DOUBLE_HANG", "convert_weight")
    args = convert_weight_args(model_a, "q4f16_1", tmp_path / "o", "cpu", None)
    start = time.monotonic()
    with pytest.raises(ToolchainError, match="timed out after 3 s and was killed"):
        run("convert_weight", args, cell="a/q4f16_1", log_path=tmp_path / "l.log", timeout=3)
    assert time.monotonic() - start < 30


def test_unstartable_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLC_FARM_MLC_LLM", str(tmp_path / "no-such-mlc_llm"))
    with pytest.raises(ToolchainError, match="cannot start"):
        run("compile", ["compile"], cell="x", log_path=tmp_path / "l.log", timeout=5)
    assert "cannot tell which Python runs" in (probe().error or "")


def test_logs_lose_colour_codes_and_progress_redraws(model_a: Path, tmp_path: Path) -> None:
    """The real tool's log (ANSI colours, tqdm bars redrawn with \\r) as a person reads it: each bar's last state."""
    lines: list[str] = []
    log = tmp_path / "build.log"
    args = convert_weight_args(model_a, "q4f16_1", tmp_path / "o", "cpu", None)
    run("convert_weight", args, cell="a/q4f16_1", log_path=log, timeout=60, on_line=lines.append)
    text = log.read_text()
    assert "\x1b" not in text and "\r" not in text and "" not in lines
    assert "Found model configuration" in text and any(line.startswith("100%|") and "15/15" in line for line in lines)
    assert sum("%|" in line for line in lines) <= 16  # at most one line per bar state, not one per redraw


def test_clean_line() -> None:
    assert clean_line("\x1b[92mFound\x1b[0m x\n") == "Found x"
    assert clean_line("\r  0%|   | 0/15\r" + " " * 14 + "\r") is None  # a bar erased by tqdm
    assert clean_line("\r 93%|##-| 14/15\r100%|###| 15/15") == "100%|###| 15/15"
    assert clean_line("\n") == ""


def test_the_toolchain_sees_no_secrets(model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("HF_TOKEN", "hf_s3cr3t")
    monkeypatch.setenv("MLC_DOUBLE_ENV_LOG", str(tmp_path / "env.log"))
    args = convert_weight_args(model_a, "q4f16_1", tmp_path / "o", "cpu", None)
    run("convert_weight", args, cell="a/q4f16_1", log_path=tmp_path / "l.log", timeout=60)
    seen = json.loads((tmp_path / "env.log").read_text().splitlines()[0])
    assert "PATH" in seen and "PYTHONPATH" in seen
    assert "OPENBLAS_NUM_THREADS" in seen  # its numeric libraries' settings reach it (conftest sets this one)
    assert not [name for name in seen if name.startswith(("AWS_", "HF_", "MLC_FARM_"))]


def test_a_failure_leads_with_the_tools_own_error_line(model_a: Path, tmp_path: Path) -> None:
    """An unknown conv template: argparse prints its usage, then the line that matters."""
    args = ["gen_config", str(model_a), "--quantization", "q4f16_1", "--conv-template", "no-such", "-o", str(tmp_path)]
    with pytest.raises(ToolchainError) as info:
        run("gen_config", args, cell="a/q4f16_1", log_path=tmp_path / "l.log", timeout=60)
    first = str(info.value).splitlines()[0]
    assert first.startswith("gen_config failed for a/q4f16_1: exit code 2: ")
    assert "error: argument --conv-template: invalid choice: 'no-such'" in first
