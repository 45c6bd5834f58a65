"""The mlc_llm test double keeps to shared/mlc-reference: flags, validation and output files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REFERENCE


def mlc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlc_llm", *args], capture_output=True, text=True, env=os.environ)


def shape(doc: object) -> object:
    """The structure of a JSON document: keys and value types, lists reduced to their first element."""
    if isinstance(doc, dict):
        return {k: shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(doc[0])] if doc else []
    return type(doc).__name__


@pytest.mark.parametrize("quant", ["q4f16_1", "q0f32"])
def test_outputs_match_the_reference_samples(tiny_models: Path, tmp_path: Path, quant: str) -> None:
    out = tmp_path / "out"
    src = tiny_models / "models" / "a"
    assert mlc("convert_weight", str(src), "--quantization", quant, "--device", "cpu", "-o", str(out)).returncode == 0
    assert mlc("gen_config", str(src), "--quantization", quant, "--conv-template", "LM", "-o", str(out)).returncode == 0
    sample = REFERENCE / f"sample-output-{quant}"
    for name in [p.name for p in sample.iterdir() if p.suffix == ".json" and p.name != "tokenizer_config.json"]:
        want, got = json.loads((sample / name).read_text()), json.loads((out / name).read_text())
        assert shape(got) == shape(want), name
        if name == "mlc-chat-config.json":
            assert got == want  # same tiny architecture, same template: the very same config
        else:
            assert got["metadata"] == want["metadata"]
            strip = [{k: v for k, v in s.items() if k != "md5sum"} for s in got["records"]]
            assert strip == [{k: v for k, v in s.items() if k != "md5sum"} for s in want["records"]]
    assert (out / "tensor-cache-b16.json").exists() == (quant == "q0f32")
    assert {"tokenizer.json", "tokenizer_config.json", "params_shard_0.bin"} <= {p.name for p in out.iterdir()}


def test_tensor_cache_records_match_the_shard_bytes(tiny_models: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mlc("convert_weight", str(tiny_models / "models" / "a"), "--quantization", "q4f16_1", "-o", str(out))
    cache = json.loads((out / "tensor-cache.json").read_text())
    for shard in cache["records"]:
        data = (out / shard["dataPath"]).read_bytes()
        assert len(data) == shard["nbytes"]
        end = 0
        for rec in shard["records"]:
            assert rec["byteOffset"] == end
            end += rec["nbytes"]
        assert end == len(data)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert_weight", "M", "--quantization", "q4f16_l", "-o", "O"], "invalid choice: 'q4f16_l'"),
        (["convert_weight", "M", "--quantization", "q4f16_1"], "the following arguments are required: --output/-o"),
        (["gen_config", "M", "--quantization", "q4f16_1", "-o", "O"], "--conv-template"),
        (["compile", "C", "-o", "x.so", "--target", "llvm"], "unrecognized arguments: --target"),
    ],
)
def test_argparse_errors_exit_2(args: list[str], message: str) -> None:
    done = mlc(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_inputs_are_checked_like_the_real_tool(tiny_models: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = mlc("convert_weight", str(empty), "--quantization", "q4f16_1", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Cannot find config.json" in done.stderr
    (empty / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    done = mlc("convert_weight", str(empty), "--quantization", "q4f16_1", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Cannot find weights" in done.stderr
    src = tiny_models / "models" / "a"
    done = mlc("convert_weight", str(src), "--quantization", "q4f16_1", "--device", "cuda:0", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "not found" in done.stderr


def test_compile_needs_a_present_device_or_an_explicit_target(tiny_models: Path, tmp_path: Path) -> None:
    src = tiny_models / "models" / "a"
    mlc("gen_config", str(src), "--quantization", "q4f16_1", "--conv-template", "LM", "-o", str(tmp_path))
    config = str(tmp_path / "mlc-chat-config.json")
    assert mlc("compile", config, "--device", "cuda", "-o", str(tmp_path / "a.so")).returncode == 1
    assert mlc("compile", config, "--device", "llvm", "-o", str(tmp_path / "a.txt")).returncode == 1
    target = '{"kind":"cuda","arch":"sm_90a"}'
    assert mlc("compile", config, "--device", target, "-o", str(tmp_path / "a.so")).returncode == 0
    assert (tmp_path / "a.so").read_bytes().startswith(b"\x7fELF")
