"""`mlc-farm export`: WebLLM records, app entries and mlc_llm serve configs of a tiny catalog built with the
toolchain double (cpu, webgpu and android libraries), with SRI hashes checked against the pulled files."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from mlc_farm.store.layout import published_path
from tests.conftest import TOKEN
from tests.helpers import cli
from tests.hub_server import LocalHub

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

MATRIX = """
quantizations: [q4f16_1, q0f32]
devices:
  - {name: cpu, family: cpu, target: llvm}
  - {name: webgpu, family: webgpu, target: webgpu}
  - {name: android, family: android, target: android}
models:
  - {id: tiny-llama-a, source: {path: models/a}, conv_template: LM}
publish: {org: farm-org}
"""
WEBLLM_FIELDS = {"model", "model_id", "model_lib", "vram_required_MB", "low_resource_required", "required_features",
                 "overrides", "integrity"}  # fmt: skip


def sri(path: Path) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()


def test_exports_for_every_runtime(hub: LocalHub, tiny_models: Path, tmp_path: Path) -> None:
    matrix, store = tiny_models / f"exports-{tmp_path.name}.yaml", str(tmp_path / "store")
    matrix.write_text(MATRIX)
    built = cli("build", "--matrix", str(matrix), "--store", store, env={"HF_TOKEN": TOKEN})
    assert built.returncode == 0, built.stdout + built.stderr  # and published: the matrix has a publish section

    def export(*args: str) -> dict:
        done = cli("export", *args, "--store", store)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    webllm = export("webllm")["model_list"]
    assert sorted(r["model_id"] for r in webllm) == ["tiny-llama-a-q0f32-MLC", "tiny-llama-a-q4f16_1-MLC"]
    libs = {}
    for record in webllm:
        assert set(record) == WEBLLM_FIELDS
        quant = record["model_id"].split("-")[-2]
        repo = f"farm-org/tiny-llama-a-{quant}-MLC"
        commit = json.loads((tmp_path / "store" / published_path("tiny-llama-a", quant)).read_text())["commit"]
        assert commit == hub.commits(repo)[-1].oid
        root = f"{hub.endpoint}/{repo}/resolve/{commit}/"  # published: the Hub repo at the commit that has it
        assert record["model"] == root
        pulled = tmp_path / quant
        assert cli("pull", "tiny-llama-a", quant, "-o", str(pulled), "--store", store).returncode == 0
        (lib,) = (pulled / "libs").glob(f"tiny-llama-a-{quant}-webgpu-*.wasm")
        assert lib.name == f"tiny-llama-a-{quant}-webgpu-{hashlib.sha256(lib.read_bytes()).hexdigest()[:12]}.wasm"
        assert record["model_lib"] == f"{root}libs/{lib.name}"
        libs[quant] = record["model_lib"]
        assert record["required_features"] == (["shader-f16"] if quant == "q4f16_1" else [])
        assert record["vram_required_MB"] > 0 and record["low_resource_required"] is True
        assert record["overrides"] == {"context_window_size": 512}
        integrity = record["integrity"]
        assert integrity["config"] == sri(pulled / "mlc-chat-config.json")
        assert integrity["model_lib"] == sri(lib)
        assert integrity["tokenizer"] == {n: sri(pulled / n) for n in ("tokenizer.json", "tokenizer_config.json")}

    app = export("app", "--base-url", "https://cdn.example/m")["model_list"]  # published: the Hub wins
    assert {frozenset(e) for e in app} == {frozenset({"model_id", "model_lib", "model_url", "estimated_vram_bytes",
                                                      "device"})}  # fmt: skip
    assert sorted(e["model_lib"] for e in app) == ["llama_q0f32", "llama_q4f16_1"]
    assert all(e["model_url"].startswith(f"{hub.endpoint}/farm-org/") and e["estimated_vram_bytes"] > 0 for e in app)

    serve = export("mlc-serve", "--model", "tiny-llama-a")["models"]
    assert sorted(serve[0]["model_lib"]) == ["android", "cpu", "webgpu"]
    assert "/resolve/main/" not in serve[0]["model_lib"]["cpu"]
    assert serve[0]["model_lib"]["cpu"].split("/libs/")[1].startswith("tiny-llama-a-q0f32-cpu-")

    # A rebuild that is not published yet: the exports point at --base-url, or say what is missing.
    rebuilt = cli("build", "--matrix", str(matrix), "--store", store, "--force", "--model", "tiny-llama-a",
                  env={"HF_TOKEN": "", "MLC_DOUBLE_VERSION": "0.21.0.dev1"})  # fmt: skip
    assert rebuilt.returncode == 1  # the builds succeed, publishing without a token fails
    served = export("webllm", "--base-url", "https://cdn.example/m")["model_list"]
    assert {r["model"] for r in served} == {f"https://cdn.example/m/tiny-llama-a-{q}-MLC/resolve/main/"
                                             for q in ("q4f16_1", "q0f32")}  # fmt: skip
    for record in served:  # the rebuilt library is other bytes: another name, so no cache serves the old one
        quant = record["model_id"].split("-")[-2]
        old_name, new_name = libs[quant].rsplit("/", 1)[1], record["model_lib"].rsplit("/", 1)[1]
        assert new_name != old_name and new_name.startswith(f"tiny-llama-a-{quant}-webgpu-")
    nowhere = cli("export", "webllm", "--store", store)
    assert nowhere.returncode == 2 and "not published to the Hub with its current builds" in nowhere.stderr
    bad = cli("export", "gguf", "--store", store)
    said = " ".join(bad.stderr.replace("│", " ").split())
    assert (
        bad.returncode == 2 and "'gguf' is not one of 'webllm', 'app', 'mlc-serve'" in said
    )  # typer checks the choice


def test_the_clis_runtimes_are_the_registrys() -> None:
    """`mlc-farm export RUNTIME` offers every format of the registry and nothing else (the CLI keeps its own
    list so that it starts without loading the exports)."""
    from mlc_farm.cli._options import Runtime
    from mlc_farm.distribute.exports import FORMATS

    assert [r.value for r in Runtime] == list(FORMATS)
