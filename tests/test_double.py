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
def test_outputs_match_the_reference_samples(model_a: Path, tmp_path: Path, quant: str) -> None:
    out = tmp_path / "out"
    src = model_a
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


def test_tensor_cache_records_match_the_shard_bytes(model_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mlc("convert_weight", str(model_a), "--quantization", "q4f16_1", "-o", str(out))
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


def test_inputs_are_checked_like_the_real_tool(model_a: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = mlc("convert_weight", str(empty), "--quantization", "q4f16_1", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Cannot find config.json" in done.stderr
    (empty / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    done = mlc("convert_weight", str(empty), "--quantization", "q4f16_1", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Cannot find weights" in done.stderr
    src = model_a
    done = mlc("convert_weight", str(src), "--quantization", "q4f16_1", "--device", "cuda:0", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "not found" in done.stderr


def test_compile_needs_a_present_device_or_an_explicit_target(model_a: Path, tmp_path: Path) -> None:
    src = model_a
    mlc("gen_config", str(src), "--quantization", "q4f16_1", "--conv-template", "LM", "-o", str(tmp_path))
    config = str(tmp_path / "mlc-chat-config.json")
    assert mlc("compile", config, "--device", "cuda", "-o", str(tmp_path / "a.so")).returncode == 1
    assert mlc("compile", config, "--device", "llvm", "-o", str(tmp_path / "a.txt")).returncode == 1
    target = '{"kind":"cuda","arch":"sm_90a"}'
    assert mlc("compile", config, "--device", target, "-o", str(tmp_path / "a.so")).returncode == 0
    assert (tmp_path / "a.so").read_bytes().startswith(b"\x7fELF")


def test_convert_weight_writes_the_safetensors_index_into_its_source(model_a: Path, tmp_path: Path) -> None:
    """As the real tool does (reference: "What the real tool does to its inputs")."""
    src = model_a
    assert not (src / "model.safetensors.index.json").exists()
    args = ["convert_weight", str(src), "--quantization", "q4f16_1", "--device", "cpu", "-o", str(tmp_path / "o")]
    done = subprocess.run([sys.executable, "-m", "mlc_llm", *args], capture_output=True)  # bytes: keep the \r
    assert done.returncode == 0, done.stderr
    index = json.loads((src / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {"model.safetensors"}
    assert b"\x1b[92mFound\x1b[0m" in done.stderr and b"\r 13%|" in done.stderr and b"15/15" in done.stderr


def test_a_read_only_source_makes_convert_weight_fail(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = model_a
    monkeypatch.setenv("MLC_DOUBLE_READONLY", str(src))
    done = mlc("convert_weight", str(src), "--quantization", "q4f16_1", "--device", "cpu", "-o", str(tmp_path / "o"))
    assert done.returncode == 1 and "Read-only file system" in done.stderr


def compiled(model_a: Path, tmp_path: Path, *compile_args: str) -> tuple[Path, Path]:
    out = tmp_path / "out"
    src = model_a
    mlc("convert_weight", str(src), "--quantization", "q4f16_1", "--device", "cpu", "-o", str(out))
    mlc("gen_config", str(src), "--quantization", "q4f16_1", "--conv-template", "LM", "-o", str(out))
    lib = tmp_path / "lib.so"
    done = mlc("compile", str(out / "mlc-chat-config.json"), "--device", "llvm", *compile_args, "-o", str(lib))
    assert done.returncode == 0, done.stderr
    return out, lib


def library_metadata(lib: Path) -> dict:
    code = "import json, sys, tvm; print(tvm.relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())['_metadata']())"
    done = subprocess.run([sys.executable, "-c", code, str(lib)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_library_metadata_matches_the_real_sample(model_a: Path, tmp_path: Path) -> None:
    """Same tiny architecture and quantization as sample-library-q4f16_1: the same metadata, except what comes
    from the tokenizer (active_vocab_size) and the byte counts of temporary buffers (same functions)."""
    _, lib = compiled(model_a, tmp_path)
    got = library_metadata(lib)
    want = json.loads((REFERENCE / "sample-library-q4f16_1" / "metadata.json").read_text())
    assert list(got) == list(want)
    for key in set(want) - {"active_vocab_size", "memory_usage"}:
        assert got[key] == want[key], key
    assert set(got["memory_usage"]) == set(want["memory_usage"])


def test_host_cpu_is_baked_in_unless_a_triple_is_given(model_a: Path, tmp_path: Path) -> None:
    out, _ = compiled(model_a, tmp_path)
    auto = mlc("compile", str(out / "mlc-chat-config.json"), "--device", "llvm", "-o", str(tmp_path / "a.so"))
    assert "Found\x1b[0m host LLVM CPU: \x1b[1mznver3" in auto.stderr
    assert b'"mcpu": "znver3"' in (tmp_path / "a.so").read_bytes()
    generic = mlc("compile", str(out / "mlc-chat-config.json"), "--device", "llvm", "--host",
                  "x86_64-unknown-linux-gnu", "-o", str(tmp_path / "g.so"))  # fmt: skip
    assert "host LLVM CPU" not in generic.stderr and b"mcpu" not in (tmp_path / "g.so").read_bytes()


def test_registries_answer_what_the_cli_accepts() -> None:
    code = (
        "import json; from mlc_llm.conversation_template import ConvTemplateRegistry as R; "
        "from mlc_llm.model import MODELS; from mlc_llm.quantization import QUANTIZATION; "
        "print(json.dumps([sorted(R._conv_templates), sorted(MODELS), sorted(QUANTIZATION)]))"
    )
    templates, models, quants = json.loads(subprocess.check_output([sys.executable, "-c", code], text=True))
    assert {"LM", "chatml", "llama-3", "redpajama_chat"} <= set(templates) and "llama" in models
    assert len(quants) == 18
    done = mlc("gen_config", "M", "--quantization", "q4f16_1", "--conv-template", "no-such", "-o", "O")
    assert done.returncode == 2 and "invalid choice: 'no-such'" in done.stderr
