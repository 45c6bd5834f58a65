"""Publishing and sources against a local server speaking the Hub HTTP API (tests/hub_server.py): assertions
are on what the server recorded."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path

import pytest
import yaml

from mlc_farm.matrix.schema import HFSource
from mlc_farm.planning.sources import fetch, resolve_hf
from mlc_farm.records.schema import now
from tests.conftest import TOKEN
from tests.helpers import cli, farm_edit, unhashed
from tests.hub_server import LocalHub


def model_files(tiny_models: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in (tiny_models / "models" / "a").iterdir()}
    files["README.md"] = b"---\nlicense: apache-2.0\n---\n# tiny\n"
    files["notes.txt"] = b"not for the toolchain"
    files["pytorch_model.bin"] = b"old torch weights, not needed beside safetensors"
    return files


def test_source_is_resolved_to_its_commit_and_downloads_only_what_the_toolchain_reads(
    hub: LocalHub, tiny_models: Path
) -> None:
    first = hub.state.seed("org/tiny", model_files(tiny_models))
    src = resolve_hf("tiny", HFSource(hf="org/tiny"))
    assert src.error is None and src.identity == first and src.license == "apache-2.0" and not src.restricted
    assert src.config and src.config["model_type"] == "llama"

    second = hub.state.seed("org/tiny", model_files(tiny_models) | {"config.json": b'{"model_type": "qwen2"}'})
    assert resolve_hf("tiny", HFSource(hf="org/tiny")).config == {"model_type": "qwen2"}
    pinned = resolve_hf("tiny", HFSource(hf="org/tiny", revision=first))
    assert second != first and pinned.identity == first and pinned.config == src.config

    fetched = fetch(src)  # a snapshot of links into the repo's blobs/: inside its cache folder, so accepted
    assert sorted(fetched.files) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    assert (
        fetched.files["model.safetensors"].read_bytes()
        == (tiny_models / "models" / "a" / "model.safetensors").read_bytes()
    )


def test_gated_missing_and_unknown_revision_say_what_to_do(
    hub: LocalHub, tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.state.seed("org/gated", model_files(tiny_models), gated=True)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_TOKEN", "")
    gated = resolve_hf("g", HFSource(hf="org/gated"))
    assert gated.error == "org/gated is gated: accept its license on the Hub and set HF_TOKEN"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    accepted = resolve_hf("g", HFSource(hf="org/gated"))  # its license accepted: builds, and publishes privately
    assert accepted.error is None and accepted.restricted
    monkeypatch.setenv("HF_TOKEN", "")
    missing = resolve_hf("m", HFSource(hf="org/nothing"))
    assert missing.error == "org/nothing was not found (or is private: set HF_TOKEN)"
    hub.state.seed("org/tiny", model_files(tiny_models))
    bad = resolve_hf("t", HFSource(hf="org/tiny", revision="v9"))
    assert bad.error == "org/tiny has no revision 'v9'"


PUBLISH_MATRIX = """
quantizations: [q4f16_1, q0f16]
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cpu}
  - {name: vulkan, family: vulkan, target: "vulkan:generic", pool: mlc-cpu%s}
models:
  - {id: tiny-llama-a, source: {path: models/a}, conv_template: LM}
  - {id: tiny-llama-b, source: {path: models/b}, conv_template: LM, publish: {repo: "farm-org/b-{quant}", private: true}}
publish: {org: farm-org}
"""


def write_matrix(tiny_models: Path, tmp_path: Path, vulkan_extra: str = "") -> Path:
    path = tiny_models / f"publish-{tmp_path.name}.yaml"
    path.write_text(PUBLISH_MATRIX % vulkan_extra)
    return path


def repo_files(hub: LocalHub, repo: str) -> dict[str, bytes]:
    return {p: f.data for p, f in hub.commits(repo)[-1].files.items()}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_build_publishes_one_commit_per_model_and_quantization(
    hub: LocalHub, tiny_models: Path, tmp_path: Path
) -> None:
    matrix = write_matrix(tiny_models, tmp_path)
    store = tmp_path / "store"
    done = cli("build", "--matrix", str(matrix), "--store", str(store))
    assert done.returncode == 0, done.stdout + done.stderr
    assert TOKEN not in done.stdout + done.stderr
    repos = [
        "farm-org/tiny-llama-a-q4f16_1-MLC",
        "farm-org/tiny-llama-a-q0f16-MLC",
        "farm-org/b-q4f16_1",
        "farm-org/b-q0f16",
    ]
    assert sorted(hub.state.repos) == sorted(repos)
    assert (
        hub.state.repos["farm-org/b-q0f16"].private and not hub.state.repos["farm-org/tiny-llama-a-q0f16-MLC"].private
    )
    for repo in repos:
        assert len(hub.commits(repo)) == 1
        files = repo_files(hub, repo)
        model = "tiny-llama-a" if "tiny-llama-a" in repo else "tiny-llama-b"
        quant = "q4f16_1" if "q4f16_1" in repo else "q0f16"
        assert sorted(unhashed(f) for f in files) == sorted([
            "README.md", "mlc-chat-config.json", "mlc-farm-manifest.json", "model.sig", "params_shard_0.bin",
            "provenance.sigstore.json",
            "tensor-cache.json", "tokenizer.json", "tokenizer_config.json",
            f"libs/{model}-{quant}-cpu.so", f"libs/{model}-{quant}-vulkan.so",
        ])  # fmt: skip
        ops = hub.commits(repo)[0].operations
        assert {unhashed(o["path"]) for o in ops if o["lfs"]} >= {"params_shard_0.bin", f"libs/{model}-{quant}-cpu.so"}
        manifest = json.loads(files["mlc-farm-manifest.json"])
        listed = {f["path"]: f for f in manifest["files"]}
        assert set(listed) == set(files) - {
            "README.md",
            "mlc-farm-manifest.json",
            "model.sig",
            "provenance.sigstore.json",
        }
        for path, f in listed.items():
            assert hashlib.sha256(files[path]).hexdigest() == f["sha256"] and len(files[path]) == f["size"]
        assert manifest["toolchain"]["mlc_llm_version"] == "0.20.0.dev0" and manifest["source"]["kind"] == "local"
        card = files["README.md"].decode()
        meta = yaml.safe_load(card.split("---\n")[1])
        assert meta["library_name"] == "mlc-llm" and {"mlc-llm", quant} <= set(meta["tags"])
        assert f"mlc_llm chat HF://{repo}" in card and "--model-lib" in card
    # Both models share their libraries: the same LFS object in two repos was uploaded once.
    assert set(hub.state.lfs_puts.values()) == {1}

    again = cli("build", "--matrix", str(matrix), "--store", str(store))
    assert again.returncode == 0, again.stderr
    assert all(len(hub.commits(r)) == 1 for r in repos), [c.operations for r in repos for c in hub.commits(r)[1:]]
    assert again.stdout.count("unchanged, no commit") == 4

    changed = write_matrix(tiny_models, tmp_path, ", opt: O3")  # only the vulkan libraries change
    third = cli("build", "--matrix", str(changed), "--store", str(store))
    assert third.returncode == 0, third.stderr
    for repo in repos:
        assert len(hub.commits(repo)) == 2
        ops = hub.commits(repo)[1].operations
        vulkan = next(unhashed(p) for p in repo_files(hub, repo) if unhashed(p).endswith("-vulkan.so"))
        # The rebuilt library has a new name (its content hash), so the card that links it changes too.
        assert sorted((o["op"], unhashed(o["path"])) for o in ops) == sorted(
            [
                ("add", vulkan),
                ("delete", vulkan),
                ("add", "mlc-farm-manifest.json"),
                ("add", "README.md"),
                ("add", "model.sig"),
                ("add", "provenance.sigstore.json"),
            ]
        )
    assert set(hub.state.lfs_puts.values()) == {1}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_publish_dry_run_wrong_token_and_deletion(
    hub: LocalHub, tiny_models: Path, tiny_matrix: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    built = cli("build", "--matrix", str(tiny_matrix), "--store", str(store), "--model", "tiny-llama-a")
    assert built.returncode == 0 and hub.state.repos == {}  # no publish section: nothing published
    matrix = write_matrix(tiny_models, tmp_path)

    dry = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "libs/tiny-llama-a-q0f16-vulkan-" in dry.stdout and "library_name: mlc-llm" in dry.stdout
    assert hub.state.repos == {} and hub.state.lfs_puts == {}
    # A dry run without the Hub previews the operations and the card at once, saying what it did not compare.
    began = time.monotonic()
    preview = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store), "--dry-run",
                  env={"HF_ENDPOINT": "http://127.0.0.1:9"})  # fmt: skip  # nothing listens there
    assert preview.returncode == 0 and time.monotonic() - began < 20, preview.stderr
    assert "library_name: mlc-llm" in preview.stdout and "libs/tiny-llama-a-q0f16-vulkan-" in preview.stdout
    said = " ".join(preview.stderr.split())
    assert "the Hub was not asked (no connection to http://127.0.0.1:9" in said and "was not compared" in said
    assert "Retrying" not in preview.stderr + preview.stdout
    offline = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store),
                  env={"HF_ENDPOINT": "http://127.0.0.1:9", "MLC_FARM_RETRY_SECONDS": "4"})  # fmt: skip
    assert offline.returncode == 3, offline.stderr
    assert "cannot reach the Hugging Face Hub at http://127.0.0.1:9 (ConnectError" in offline.stderr
    assert "check HF_ENDPOINT and the network" in offline.stderr and "Traceback" not in offline.stderr

    denied = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store),
                 env={"HF_TOKEN": "hf_wrongTokenValue42"})  # fmt: skip
    assert denied.returncode == 1
    assert "the Hub refused farm-org/tiny-llama-a-q0f16-MLC (HTTP 401): check that HF_TOKEN" in denied.stderr
    assert "hf_wrongTokenValue42" not in denied.stdout + denied.stderr
    assert hub.state.repos == {}

    # Transient upload failures are retried with backoff: one commit, every object stored once.
    hub.state.fail_uploads = 2
    real = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store))
    assert real.returncode == 0 and "committed" in real.stdout, real.stderr
    repo = "farm-org/tiny-llama-a-q0f16-MLC"
    assert len(hub.commits(repo)) == 1 and hub.state.fail_uploads == 0
    assert set(hub.state.lfs_puts.values()) == {1}
    # The Hub keeps failing the commit: the publish fails, and no commit (half or whole) exists.
    hub.state.fail_commits = 100
    refused = cli("publish", "tiny-llama-a", "q4f16_1", "--matrix", str(matrix), "--store", str(store),
                  env={"MLC_FARM_RETRY_SECONDS": "4"})  # fmt: skip
    assert refused.returncode == 3  # a service that kept failing, not the input: exit 3
    assert "the Hub kept failing farm-org/tiny-llama-a-q4f16_1-MLC (HTTP 500) for 4 s of retries" in refused.stderr
    assert 2 <= 100 - hub.state.fail_commits <= 6  # one retry layer: a few attempts in 4 s, not attempts x layers
    assert hub.commits("farm-org/tiny-llama-a-q4f16_1-MLC") == []
    hub.state.fail_commits = 0
    # Rate-limited: a 429 that outlasts the budget is exit 3 saying so, in one attempt when Retry-After asks more
    # than the budget has (no pointless wait), within the budget otherwise; never an internal error.
    hub.state.limit_commits, hub.state.limit_after = -1, "10"
    began, hub.state.commit_times = time.monotonic(), []
    limited = cli("publish", "tiny-llama-a", "q4f16_1", "--matrix", str(matrix), "--store", str(store),
                  env={"MLC_FARM_RETRY_SECONDS": "4"})  # fmt: skip
    assert limited.returncode == 3 and len(hub.state.commit_times) == 1, limited.stderr
    assert "the Hub is rate-limiting farm-org/tiny-llama-a-q4f16_1-MLC" in " ".join(limited.stderr.split())
    assert "internal error" not in limited.stderr and time.monotonic() - began < 30
    hub.state.limit_after, hub.state.commit_times = "1", []
    limited = cli("publish", "tiny-llama-a", "q4f16_1", "--matrix", str(matrix), "--store", str(store),
                  env={"MLC_FARM_RETRY_SECONDS": "4"})  # fmt: skip
    assert limited.returncode == 3 and 2 <= len(hub.state.commit_times) <= 5, limited.stderr
    # Retry-After is waited at least, twice; then the commit lands.
    hub.state.limit_commits, hub.state.limit_after, hub.state.commit_times = 2, "2", []
    waited = cli("publish", "tiny-llama-a", "q4f16_1", "--matrix", str(matrix), "--store", str(store))
    assert waited.returncode == 0 and len(hub.commits("farm-org/tiny-llama-a-q4f16_1-MLC")) == 1, waited.stderr
    times = hub.state.commit_times
    assert len(times) == 3 and all(b - a >= 2 for a, b in itertools.pairwise(times)), times

    # The catalog loses the vulkan library (as if the device left the matrix): republishing deletes it.
    farm_edit(store, "tiny-llama-a", "q0f16", lambda entry: entry["libs"].pop("vulkan"))
    hub.state.push_before_commits = 1  # someone pushes between the publish reading the repo and its commit
    again = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store))
    assert again.returncode == 0, again.stderr  # 412: read again, commit again on their commit
    assert [c.summary for c in hub.commits(repo)][1] == "someone else"
    ops = hub.commits(repo)[2].operations  # on top of theirs: the repo holds exactly this build again
    deleted = sorted(unhashed(o["path"]) for o in ops if o["op"] == "delete")
    assert deleted == ["libs/tiny-llama-a-q0f16-vulkan.so", "theirs.txt"]
    assert not any(unhashed(p) == "libs/tiny-llama-a-q0f16-vulkan.so" for p in repo_files(hub, repo))
    assert TOKEN not in dry.stdout + real.stdout + again.stdout + again.stderr
    hub.state.push_before_commits = 2  # they push again after the publish read the repo again: it says so
    farm_edit(store, "tiny-llama-a", "q0f16", lambda entry: entry.update(libs={}))
    raced = cli("publish", "tiny-llama-a", "q0f16", "--matrix", str(matrix), "--store", str(store))
    assert raced.returncode == 1 and "someone else pushed to farm-org/tiny-llama-a-q0f16-MLC" in raced.stderr


def test_the_card_links_its_base_and_says_what_each_library_needs() -> None:
    from mlc_farm.checks.memory import MemoryEstimate
    from mlc_farm.checks.results import FitCheck, RunCheck, Validation
    from mlc_farm.checks.speed import Speed
    from mlc_farm.distribute.hub import model_card
    from mlc_farm.records.schema import CatalogEntry, FileEntry, LibRef

    def lib(target: str, ran: bool) -> LibRef:
        speeds = [Speed(phase="decode", method="VM decode", tokens_per_s=42.0, runs=[41.0, 42.0, 43.0]),
                  Speed(phase="prefill", method="VM prefill", tokens_per_s=900.0, runs=[900.0])]  # fmt: skip
        run = (RunCheck(status="passed", device="cpu", method="VM decode", tokens_per_s=42.0, speeds=speeds) if ran
               else RunCheck(status="not run"))  # fmt: skip
        return LibRef(key="k" * 64, file=FileEntry(path="model-lib.so", size=1, sha256="0" * 64), target=target,
                      host="x86_64-unknown-linux-gnu", validation=Validation(fits=FitCheck(status="passed"), run=run),
                      memory=MemoryEstimate(weights_bytes=700 * 2**20, temp_bytes=100 * 2**20,
                                            kv_cache_bytes=224 * 2**20, context_window=4096))  # fmt: skip

    source = {"kind": "hf", "ref": "org/Base-1B", "identity": "a" * 40, "license": "apache-2.0", "restricted": False}
    entry = CatalogEntry(model="Base-1B", quantization="q4f16_1", source=source, convert="c" * 64, config="g" * 64,
                         libs={"cpu": lib("llvm", True), "webgpu": lib("webgpu", False)}, updated_at=now())  # fmt: skip
    files = {"cpu": "libs/Base-1B-q4f16_1-cpu.so", "webgpu": "libs/Base-1B-q4f16_1-webgpu.wasm"}
    card = model_card(entry, "org/Base-1B-q4f16_1-MLC", files)
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "org/Base-1B" and meta["base_model_relation"] == "quantized"
    assert meta["license"] == "apache-2.0" and meta["tags"] == ["mlc-llm", "web-llm", "q4f16_1"]
    assert (
        "| cpu | `llvm` | `libs/Base-1B-q4f16_1-cpu.so` | not recorded | passed | passed on cpu | 42.0 | 900.0 | "
        "1,024 MB |" in card
    )
    assert "by these methods (a figure compares only with one of its own method):\n- VM decode\n- VM prefill" in card
    assert (
        "mlc_llm chat ./Base-1B-q4f16_1-MLC --device cpu --model-lib ./Base-1B-q4f16_1-MLC/libs/Base-1B-q4f16_1-cpu.so"
        in card
    )
    assert "mlc_llm serve ./Base-1B-q4f16_1-MLC --device cpu" in card and "MLCEngine(" in card
    assert "webllm.CreateMLCEngine" in card and "resolve/main/libs/Base-1B-q4f16_1-webgpu.wasm" in card

    no_web = model_card(entry.model_copy(update={"libs": {"cpu": entry.libs["cpu"]}}), "org/x", {"cpu": files["cpu"]})
    assert "web-llm" not in yaml.safe_load(no_web.split("---\n")[1])["tags"] and "webllm" not in no_web


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_gated_source_is_published_privately_unless_the_matrix_says(
    hub: LocalHub, tiny_models: Path, tmp_path: Path
) -> None:
    hub.state.seed("org/gated-tiny", model_files(tiny_models), gated=True)
    hub.state.seed("org/open-tiny", model_files(tiny_models))
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        "quantizations: [q4f16_1]\n"
        "devices: [{name: cpu, family: cpu, target: llvm}]\n"
        "publish: {org: farm-org}\n"
        "models:\n"
        "  - {id: gated, source: {hf: org/gated-tiny}, conv_template: LM}\n"
        "  - {id: open, source: {hf: org/open-tiny}, conv_template: LM}\n"
        "  - {id: shared, source: {hf: org/gated-tiny}, conv_template: LM, publish: {private: false}}\n"
    )
    done = cli("build", "--matrix", str(matrix), "--store", str(tmp_path / "store"))
    assert done.returncode == 0, done.stdout + done.stderr
    private = {name: repo.private for name, repo in hub.state.repos.items() if name.startswith("farm-org/")}
    assert private == {"farm-org/gated-q4f16_1-MLC": True, "farm-org/open-q4f16_1-MLC": False,
                       "farm-org/shared-q4f16_1-MLC": False}  # fmt: skip
    card = repo_files(hub, "farm-org/open-q4f16_1-MLC")["README.md"].decode()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["base_model"] == "org/open-tiny" and meta["base_model_relation"] == "quantized"
    assert meta["license"] == "apache-2.0" and "web-llm" not in meta["tags"]
