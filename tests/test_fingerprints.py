"""A new MLC nightly costs what it changes: convert keys hold the converter's fingerprint on a tiny twin
(mlc_farm/planning/twins.py), so unchanged conversion code reuses the weights and changed code re-converts exactly
the sources it touches."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlc_farm.planning import twins
from mlc_farm.records.reads import entries
from mlc_farm.store import open_store
from mlc_farm.tiny_model import write_tiny_llama
from tests.helpers import run_cli, toolchain_calls
from tests.test_fidelity import run

MATRIX = """
quantizations: [q4f16_1]
devices:
  - {{name: cpu, family: cpu, target: llvm}}
models:
  - {{id: llama, source: {{path: llama}}, conv_template: LM}}
  - {{id: mistral, source: {{path: mistral}}, conv_template: LM}}
{extra}
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    write_tiny_llama(tmp_path / "llama", seed=1)
    write_tiny_llama(tmp_path / "mistral", seed=2, model_type="mistral")  # type: ignore[arg-type]
    (tmp_path / "matrix.yaml").write_text(MATRIX.format(extra=""))
    return tmp_path / "matrix.yaml"


def converts(log: Path) -> tuple[int, list[str]]:
    """(twin conversions, the real sources converted) from the double's log."""
    calls = [c for c in toolchain_calls(log) if c["step"] == "convert_weight"]
    twins_run = sum("mlc-farm-twin-" in c["argv"][1] for c in calls)
    return twins_run, sorted(Path(c["argv"][1]).name for c in calls if "mlc-farm-twin-" not in c["argv"][1])


def served(store: Path) -> dict[str, str]:
    return {e.model: e.convert for e in entries(open_store(str(store)))}


def test_the_twin_keeps_the_architecture_and_shrinks_the_sizes(tmp_path: Path) -> None:
    config = {"model_type": "qwen2", "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
              "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 151936, "tie_word_embeddings": True,
              "rope_scaling": {"type": "yarn", "factor": 4}, "sliding_window": 4096, "torch_dtype": "bfloat16"}  # fmt: skip
    cls = twins.conversion_class(config, "q4f16_1")
    assert cls is not None and cls["gqa_ratio"] == 4 and cls["head_dim"] == 128 and cls["dtype"] == "bfloat16"
    twin = twins.twin_config(cls)
    assert (twin["num_attention_heads"], twin["num_key_value_heads"], twin["head_dim"]) == (4, 1, 128)
    assert twin["rope_scaling"] == {"type": "yarn", "factor": 4} and twin["tie_word_embeddings"] is True
    assert twin["hidden_size"] % twins.GROUP == 0 and twin["vocab_size"] < 1000
    bigger = {
        **config,
        "num_hidden_layers": 80,
        "hidden_size": 8192,
        "num_attention_heads": 64,
        "num_key_value_heads": 16,
    }
    assert twins.class_key(twins.conversion_class(bigger, "q4f16_1")) == twins.class_key(cls)  # type: ignore[arg-type]
    assert twins.conversion_class({**config, "model_type": "gpt2"}, "q4f16_1") is None  # no twin: version keys
    out = twins.write_twin(cls, tmp_path / "twin")
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "np") as f:
        names = set(f.keys())
    assert "lm_head.weight" not in names and "model.layers.0.self_attn.q_proj.bias" in names  # tied; qwen2 biases


@pytest.mark.slow
def test_a_new_nightly_reuses_unchanged_conversions_and_reconverts_what_changed(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, log = tmp_path / "store", tmp_path / "calls.log"
    monkeypatch.setenv("MLC_DOUBLE_LOG", str(log))
    assert run(catalog, store)[0].ok
    assert converts(log) == (2, ["llama", "mistral"])  # one twin per conversion class, then the sources
    first = served(store)

    log.unlink()
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")  # a new nightly, the same converter
    done, _ = run(catalog, store)
    assert done.ok, done.message
    assert converts(log) == (2, [])  # twins only: no real source converted again
    assert sum(c["step"] == "compile" for c in toolchain_calls(log)) == 2  # every library compiled again
    assert served(store) == first  # the same weights serve

    why = run_cli("plan", "--matrix", str(catalog), "--store", str(store), "--explain", env={"COLUMNS": "300"})
    assert (
        "convert llama/q4f16_1" in why.stdout and "reused: conversion unchanged under mlc_llm 0.21.0.dev1" in why.stdout
    )
    assert "= that of mlc_llm 0.20.0.dev0" in why.stdout

    log.unlink()
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev2")
    monkeypatch.setenv("MLC_DOUBLE_CONVERT_CHANGE", "mistral")  # this nightly's converter changed for mistral
    changed, _ = run(catalog, store)
    assert changed.ok, changed.message
    assert converts(log) == (2, ["mistral"])  # exactly the sources of that architecture
    now = served(store)
    assert now["llama"] == first["llama"] and now["mistral"] != first["mistral"]


@pytest.mark.slow
def test_a_twin_that_fails_falls_back_to_the_version_key(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, log = tmp_path / "store", tmp_path / "calls.log"
    monkeypatch.setenv("MLC_DOUBLE_LOG", str(log))
    monkeypatch.setenv("MLC_DOUBLE_FAIL", "convert_weight:mlc-farm-twin-")
    done, _ = run(catalog, store)
    assert done.ok, done.message
    assert converts(log) == (2, ["llama", "mistral"])  # the twins failed; the sources converted as before
    why = run_cli("plan", "--matrix", str(catalog), "--store", str(store), "--explain", env={"COLUMNS": "300",
                  "MLC_DOUBLE_VERSION": "0.21.0.dev1"})  # fmt: skip
    assert "keyed by the toolchain version: the twin's convert_weight failed" in why.stdout


@pytest.mark.slow
def test_convert_identity_toolchain_converts_everything_again(
    catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog.write_text(MATRIX.format(extra="convert_identity: toolchain"))
    store, log = tmp_path / "store", tmp_path / "calls.log"
    monkeypatch.setenv("MLC_DOUBLE_LOG", str(log))
    assert run(catalog, store)[0].ok
    log.unlink()
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")
    assert run(catalog, store)[0].ok
    assert converts(log) == (0, ["llama", "mistral"])  # no twins, every source again
