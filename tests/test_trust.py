"""Artifacts you can trust, end to end through the CLI with the toolchain double: sources stay untouched,
options rebuild only what they change, every library is proven before it is served or published, and the
catalog never regresses."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from mlc_farm.records.reads import entries, read_entry
from mlc_farm.store.local import LocalStore
from tests.conftest import TINY_MATRIX
from tests.helpers import run_cli, toolchain_calls
from tests.hub_server import LocalHub
from tests.test_build import steps

pytestmark = pytest.mark.usefixtures("prefect_api")


def build(matrix: Path, store: Path, calls: Path, *extra: str, env: dict | None = None):
    return run_cli("build", "--matrix", str(matrix), "--store", str(store), *extra,
                   env={"MLC_DOUBLE_LOG": str(calls), **(env or {})})  # fmt: skip


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256, and every directory: a listing to compare before and after."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def own_models(tiny_models: Path, tmp_path: Path, text: str = TINY_MATRIX) -> Path:
    """A matrix beside private copies of the tiny models (the tests change and protect them)."""
    shutil.copytree(tiny_models / "models", tmp_path / "models")
    (tmp_path / "matrix.yaml").write_text(text)
    return tmp_path / "matrix.yaml"


@pytest.mark.slow
def test_sources_stay_untouched_even_on_a_read_only_volume(tiny_models: Path, tmp_path: Path) -> None:
    matrix = own_models(tiny_models, tmp_path)
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    before = snapshot(tmp_path / "models")
    assert not any(name.endswith(".index.json") for name in before)
    # The double fails like the real tool on a read-only volume if it is ever handed the source directory.
    done = build(matrix, store, calls, env={"MLC_DOUBLE_READONLY": str(tmp_path / "models")})
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(tmp_path / "models") == before
    runs = toolchain_calls(calls)
    assert steps(calls) == {"convert_weight": 4, "gen_config": 4, "compile": 4}
    for call in runs:
        assert str(tmp_path / "models") not in " ".join(call["argv"]), call  # always a staging directory
        if call["step"] == "compile":
            assert call["argv"][call["argv"].index("--host") + 1] == "x86_64-unknown-linux-gnu"

    calls.unlink()
    again = build(matrix, store, calls)
    assert again.returncode == 0 and steps(calls) == {}  # the source's identity did not move

    # What a user pulled can be checked again: files against the catalog, fit, and a run where the device is.
    checked = run_cli("validate", "tiny-llama-b", "q4f16_1", "--store", str(store))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "│ cpu    │ passed" in checked.stdout and "not run: no vulkan" in checked.stdout
    pulled = tmp_path / "pulled"
    assert run_cli("pull", "tiny-llama-b", "q4f16_1", "-o", str(pulled), "--store", str(store)).returncode == 0
    mine = run_cli(
        "validate", "tiny-llama-b", "q4f16_1", "--dir", str(pulled), "--device", "cpu", "--store", str(store)
    )
    assert mine.returncode == 0 and "vulkan" not in mine.stdout
    shard = pulled / "params_shard_0.bin"
    shard.write_bytes(bytes([shard.read_bytes()[0] ^ 1]) + shard.read_bytes()[1:])
    tampered = run_cli("validate", "tiny-llama-b", "q4f16_1", "--dir", str(pulled), "--store", str(store))
    assert tampered.returncode == 1 and "params_shard_0.bin differs from what the farm built" in tampered.stderr


@pytest.mark.slow
def test_option_edits_rebuild_only_what_they_change(tiny_models: Path, tmp_path: Path) -> None:
    matrix = own_models(tiny_models, tmp_path)
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    assert build(matrix, store, calls).returncode == 0
    first = {q: read_entry(LocalStore(store), "tiny-llama-a", q) for q in ("q4f16_1", "q0f16")}

    doc = yaml.safe_load(matrix.read_text())
    doc["models"][0]["conv_template"] = "chatml"
    matrix.write_text(yaml.safe_dump(doc))
    # Before any GPU hour: what will rebuild, and why.
    why = run_cli("plan", "--matrix", str(matrix), "--store", str(store), "--explain")
    assert why.returncode == 0, why.stderr
    assert "why 6 builds are to do:" in why.stdout  # 2 configs, and the 4 checks that run with them
    assert why.stdout.count("  conv_template: 'LM' -> 'chatml'") == 2
    assert why.stdout.count("config tiny-llama-a/") == 2 and "convert tiny-llama-a" not in why.stdout
    nightly = run_cli("plan", "--matrix", str(matrix), "--store", str(store), "--explain",
                      env={"MLC_DOUBLE_VERSION": "0.21.0.dev9"})  # fmt: skip
    assert "  toolchain.mlc_llm_version: '0.20.0.dev0' -> '0.21.0.dev9'" in nightly.stdout
    # configs, libraries and checks; not the references (the same under every toolchain) nor the conversions
    # (the converter's fingerprint did not move: tests/test_fingerprints.py)
    assert "why 16 builds are to do:" in nightly.stdout
    calls.unlink()
    edited = build(matrix, store, calls)
    assert edited.returncode == 0, edited.stdout + edited.stderr
    assert steps(calls) == {"gen_config": 2}  # tiny-llama-a x 2 quantizations: seconds, not hours
    assert "convert 4 reused; config 2 built, 2 reused; library 4 reused" in edited.stdout
    for q, old in first.items():
        new = read_entry(LocalStore(store), "tiny-llama-a", q)
        assert new.convert == old.convert and new.config != old.config and set(new.libs) == {"cpu", "vulkan"}

    doc["models"][0]["overrides"] = {"context_window_size": 256}
    matrix.write_text(yaml.safe_dump(doc))
    calls.unlink()
    assert build(matrix, store, calls).returncode == 0
    assert steps(calls) == {"gen_config": 2, "compile": 4}  # never convert_weight
    config = json.loads(
        (store / "builds" / f"{read_entry(LocalStore(store), 'tiny-llama-a', 'q0f16').config}.json").read_text()
    )
    assert config["inputs"]["overrides"] == {"context_window_size": 256}


PUBLISHED = TINY_MATRIX + "publish: {org: farm-org}\n"


@pytest.mark.slow
def test_a_library_that_does_not_fit_fails_its_cell_and_changes_nothing(
    hub: LocalHub, tiny_models: Path, tmp_path: Path
) -> None:
    matrix = own_models(tiny_models, tmp_path, PUBLISHED)
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    first = build(matrix, store, calls)
    assert first.returncode == 0, first.stdout + first.stderr
    repos = sorted(hub.state.repos)
    assert len(repos) == 4 and all(len(hub.commits(r)) == 1 for r in repos)

    # What was checked is in `ls`, the manifest and the card, and nothing claims a run that did not happen.
    listing = run_cli("ls", "--store", str(store)).stdout
    assert "tiny-llama-b q4f16_1 cpu: fits; ran on cpu" in listing
    assert "tiny-llama-b q4f16_1 vulkan: fit not checked; not run: no vulkan device" in listing
    files = {p: f.data for p, f in hub.commits("farm-org/tiny-llama-b-q4f16_1-MLC")[-1].files.items()}
    libraries = json.loads(files["mlc-farm-manifest.json"])["builds"]["libraries"]
    assert libraries["cpu"]["validation"]["fits"]["status"] == "passed"
    assert libraries["cpu"]["validation"]["run"]["status"] == "passed"
    assert libraries["cpu"]["validation"]["run"]["ran_with"] == "tiny-llama-b"  # one library; each cell's own check
    assert libraries["cpu"]["fidelity"]["status"] == "passed" and libraries["cpu"]["fidelity"]["measured"]["top1"]
    assert libraries["vulkan"]["validation"]["run"]["status"] == "not run"
    assert libraries["cpu"]["memory"]["total_bytes"] > libraries["cpu"]["memory"]["weights_bytes"] > 0
    assert libraries["vulkan"]["memory"]["borrowed_from"] == "cpu"  # not loadable here: the cpu library's estimate
    card = files["README.md"].decode()
    assert "| passed | passed on cpu |" in card  # run with these weights by the cell's check
    assert "| cpu | transformers float32 (transformers " in card
    assert "| not checked | not run: no vulkan device " in card  # no driver, or a driver this runtime cannot use

    catalog_before = snapshot(store / "catalog")
    doc = yaml.safe_load(matrix.read_text())
    doc["devices"][0]["opt"] = "O3"  # new cpu libraries, same weights
    matrix.write_text(yaml.safe_dump(doc))
    calls.unlink()
    bad = build(matrix, store, calls, env={"MLC_DOUBLE_BAD_METADATA": "1"})
    assert bad.returncode == 1
    assert steps(calls) == {"compile": 2}
    assert "4 of 8 cells failed" in bad.stderr
    failed = [line for line in bad.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4 and all("/cpu: library for" in line and "does not fit" in line for line in failed)
    assert "model.layers.0.self_attn.qkv_proj.q_weight: shape [385, 16]" in bad.stdout + bad.stderr
    assert snapshot(store / "catalog") == catalog_before  # still serving last night's proven libraries
    assert all(len(hub.commits(r)) == 1 for r in repos)  # and nothing was published

    # A library that fits and runs but computes another function (another rope base): only fidelity sees it.
    doc["devices"][0]["opt"] = "O1"
    matrix.write_text(yaml.safe_dump(doc))
    wrong = build(matrix, store, calls, env={"MLC_DOUBLE_ROPE_BASE": "1"})
    assert wrong.returncode == 1 and "4 of 8 cells failed" in wrong.stderr
    failed = [line for line in wrong.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4 and all("/cpu: fidelity failed: top-1" in line for line in failed), failed
    assert snapshot(store / "catalog") == catalog_before
    assert all(len(hub.commits(r)) == 1 for r in repos)


@pytest.mark.slow
def test_nan_logits_fail_where_the_library_runs(tiny_models: Path, tmp_path: Path) -> None:
    matrix = own_models(tiny_models, tmp_path)
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    done = build(matrix, store, calls, env={"MLC_DOUBLE_NAN": "1"})
    assert done.returncode == 1
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4 and all("/cpu:" in line and "non-finite logits" in line for line in failed)
    # The vulkan libraries were cross-compiled: not run here, and they say so rather than pass.
    served = {(e.model, e.quantization): e for e in entries(LocalStore(store))}
    assert len(served) == 4
    for e in served.values():
        assert set(e.libs) == {"vulkan"} and e.missing == ["cpu"]
        assert e.libs["vulkan"].validation.run.status == "not run"
    assert "no validated library yet" in run_cli("ls", "--store", str(store)).stdout


@pytest.mark.slow
def test_a_nightly_whose_compiles_all_fail_keeps_the_previous_entries(tiny_models: Path, tmp_path: Path) -> None:
    matrix = own_models(tiny_models, tmp_path)
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    assert build(matrix, store, calls).returncode == 0
    before = snapshot(store / "catalog")
    calls.unlink()
    nightly = build(matrix, store, calls, env={"MLC_DOUBLE_VERSION": "0.21.0.dev9", "MLC_DOUBLE_FAIL": "compile"})
    assert nightly.returncode == 1
    assert steps(calls) == {"gen_config": 4, "compile": 4}  # the same converter: the weights are reused
    assert "4 catalog entries kept at their previous builds" in nightly.stderr
    assert snapshot(store / "catalog") == before
    for e in entries(LocalStore(store)):
        record = json.loads((store / "builds" / f"{e.convert}.json").read_text())
        assert record["toolchain"]["mlc_llm_version"] == "0.20.0.dev0" and set(e.libs) == {"cpu", "vulkan"}
