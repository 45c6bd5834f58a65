"""Sources are read, never trusted: a link out of a model folder and an impossible config.json are refused
before anything runs (exit 2 naming the model, the file and where it points, or the field and its value), in
bounded memory; in a build only that model's cells fail. (A Hub snapshot, whose cache is made of links into its
repo's blobs/, still builds: tests/test_hub.py builds from the test Hub.)"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_farm.records.reads import read_entry
from mlc_farm.store.local import LocalStore
from tests.helpers import ROOT, cli, run_cli, toolchain_calls
from tests.hub_server import LocalHub

SECRET = b"[default]\naws_secret_access_key = sEcReT0fThEfArMtEsTs9876543210\n"
ONE_MODEL = """
quantizations: [q4f16_1]
devices: [{name: cpu, family: cpu, target: llvm, pool: mlc-cpu}]
models:
%s
"""


def matrix_of(tmp_path: Path, *models: str, extra: str = "") -> Path:
    lines = "\n".join(f"  - {{id: {m}, source: {{path: models/{m}}}, conv_template: LM}}" for m in models)
    path = tmp_path / "matrix.yaml"
    path.write_text(ONE_MODEL % lines + extra)
    return path


def model_copy(tiny_models: Path, tmp_path: Path, name: str) -> Path:
    return Path(shutil.copytree(tiny_models / "models" / "a", tmp_path / "models" / name))


def secret_file(tmp_path: Path) -> Path:
    home = tmp_path / "home" / ".aws"
    home.mkdir(parents=True)
    (home / "credentials").write_bytes(SECRET)
    return home / "credentials"


def plant(kind: str, model: Path, secret: Path) -> tuple[str, str]:
    """A hostile link of `kind` in the model folder; (the file, what the message must name)."""
    if kind == "absolute":
        (model / "merges.txt").symlink_to(secret)
        return "merges.txt", str(secret)
    if kind == "relative":  # as a `git clone` or an unpacked archive keeps it
        (model / "added_tokens.json").symlink_to(os.path.relpath(secret, model))
        return "added_tokens.json", str(secret)
    if kind == "linked-directory":
        (model / "vendor").symlink_to(secret.parent, target_is_directory=True)
        (model / "merges.txt").symlink_to("vendor/credentials")  # looks inside; resolves outside
        return "merges.txt", str(secret)
    if kind == "loop":
        (model / "merges.txt").symlink_to("vocab.json")
        (model / "vocab.json").symlink_to("merges.txt")
        return "", "link loop"
    assert kind == "dangling"
    (model / "special_tokens_map.json").symlink_to("gone.json")
    return "special_tokens_map.json", "dangling link (to gone.json)"


@pytest.mark.parametrize("kind", ["absolute", "relative", "linked-directory", "loop", "dangling"])
def test_a_link_that_leaves_the_source_is_refused_before_anything_runs(
    tiny_models: Path, tmp_path: Path, kind: str
) -> None:
    model, secret = model_copy(tiny_models, tmp_path, "leaky"), secret_file(tmp_path)
    name, target = plant(kind, model, secret)
    calls = tmp_path / "calls.log"
    done = run_cli("plan", "--matrix", str(matrix_of(tmp_path, "leaky")), env={"MLC_DOUBLE_LOG": str(calls)})
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.replace("\n", "")
    assert "model leaky: " in message and name in message and target in message, done.stderr
    assert SECRET.decode().split("=")[1].strip() not in done.stdout + done.stderr
    assert not [c for c in toolchain_calls(calls) if c["step"] in ("convert_weight", "gen_config", "compile")]


def test_a_link_that_stays_inside_the_source_is_followed(tiny_models: Path, tmp_path: Path) -> None:
    model = model_copy(tiny_models, tmp_path, "tidy")
    (model / "sub").mkdir()
    (model / "tokenizer_config.json").rename(model / "sub" / "tokenizer_config.json")
    (model / "tokenizer_config.json").symlink_to("sub/tokenizer_config.json")
    done = run_cli("plan", "--matrix", str(matrix_of(tmp_path, "tidy")))
    assert done.returncode == 0, done.stdout + done.stderr


HOSTILE_CONFIGS = [
    ({"hidden_size": 10**9}, "hidden_size: 1000000000"),
    ({"head_dim": 10**9}, "head_dim: 1000000000"),
    ({"head_dim": 4096, "num_attention_heads": 32, "num_key_value_heads": 4}, "head_dim: 4096"),
    ({"num_attention_heads": 0}, "num_attention_heads: 0"),
    ({"num_key_value_heads": -2}, "num_key_value_heads: -2"),
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "num_key_value_heads: 3"),
    ({"vocab_size": [1, 2]}, "vocab_size: '[1, 2]'"),
    ({"num_hidden_layers": True}, "num_hidden_layers: 'True'"),
    ({"model_type": ["llama"]}, "model_type"),
    ([], "a JSON list, not an object"),
    ("not json", "not JSON"),
]


def plan_limited(matrix: Path, limit_gb: float) -> subprocess.CompletedProcess:
    """`mlc-farm plan` in a process whose address space is capped (ulimit -v)."""

    def cap() -> None:
        size = int(limit_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return subprocess.run([sys.executable, "-m", "mlc_farm.cli", "plan", "--matrix", str(matrix)],
                          capture_output=True, text=True, cwd=ROOT, preexec_fn=cap, timeout=120)  # fmt: skip


def write_config(model: Path, change: object) -> None:
    config = json.loads((model / "config.json").read_text())
    if isinstance(change, dict):
        text = json.dumps({**config, **change})
    else:
        text = change if isinstance(change, str) else json.dumps(change)
    (model / "config.json").unlink()
    (model / "config.json").write_text(text)


@pytest.mark.slow
def test_impossible_configs_are_exit_2_in_bounded_memory(tiny_models: Path, tmp_path: Path) -> None:
    names = [f"huge{i}" for i in range(len(HOSTILE_CONFIGS))]
    for name, (change, _) in zip(names, HOSTILE_CONFIGS, strict=True):
        write_config(model_copy(tiny_models, tmp_path, name), change)
    done = plan_limited(matrix_of(tmp_path, *names), 3)  # one plan: every model is named with its own reason
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stderr.replace("\n", "")
    assert "Traceback" not in message, done.stderr
    for name, (_, said) in zip(names, HOSTILE_CONFIGS, strict=True):
        assert f"model {name}: config.json" in message and said in message.split(f"model {name}: ")[1], (name, said)


@pytest.mark.slow
def test_a_class_whose_twin_would_be_huge_keeps_version_keys_in_bounded_memory(
    tiny_models: Path, tmp_path: Path
) -> None:
    # Within every bound, but an odd head size makes the twin's smallest hidden size 32 x 2047.
    write_config(model_copy(tiny_models, tmp_path, "odd"), {"head_dim": 2047})
    done = plan_limited(matrix_of(tmp_path, "odd"), 3)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_bad_source_fails_only_its_own_cells_and_its_secret_goes_nowhere(
    hub: LocalHub, tiny_models: Path, tmp_path: Path
) -> None:
    model_copy(tiny_models, tmp_path, "healthy")
    plant("relative", model_copy(tiny_models, tmp_path, "leaky"), secret_file(tmp_path))
    write_config(model_copy(tiny_models, tmp_path, "huge"), {"num_attention_heads": 0})
    matrix = matrix_of(tmp_path, "healthy", "leaky", "huge", extra="publish: {org: farm-org}\n")
    store = tmp_path / "store"
    done = cli("build", "--matrix", str(matrix), "--store", str(store))
    assert done.returncode == 1, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert "leaky/q4f16_1/cpu: model leaky: added_tokens.json is a link to" in said
    assert "huge/q4f16_1/cpu: model huge: config.json field num_attention_heads: 0" in said
    assert "2 of 3 cells failed" in said
    st = LocalStore(store)
    assert read_entry(st, "healthy", "q4f16_1") is not None
    assert read_entry(st, "leaky", "q4f16_1") is None and read_entry(st, "huge", "q4f16_1") is None
    assert sorted(hub.state.repos) == ["farm-org/healthy-q4f16_1-MLC"]

    out = tmp_path / "pulled"
    assert cli("pull", "healthy", "q4f16_1", "-o", str(out), "--store", str(store)).returncode == 0
    exported = cli("export", "mlc-serve", "--store", str(store))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    secret = SECRET.split(b"=")[1].strip()
    assert secret.decode() not in said + exported.stdout
    for root in (store, out):
        for path in root.rglob("*"):
            assert not path.is_file() or secret not in path.read_bytes(), path
    assert not any(secret in f.data for r in hub.state.repos.values() for c in r.commits for f in c.files.values())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_source_file_swapped_for_a_link_when_gen_config_starts_leaves_no_secret(
    tiny_models: Path, tmp_path: Path
) -> None:
    """What the toolchain reads is what was checked (issue 37, item 5): a file of a local source swapped for a link
    to a secret as gen_config starts (after every check) is not read through, in that build or the next."""
    shutil.copytree(tiny_models / "models", tmp_path / "models")
    (tmp_path / "matrix.yaml").write_text(
        "quantizations: [q4f16_1]\ndevices: [{name: cpu, family: cpu, target: llvm}]\n"
        "models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]\n"
    )
    secret = tmp_path / "credentials.json"
    secret.write_text('{"aws_secret_access_key": "SECRET-OF-THE-USER"}')
    victim = tmp_path / "models" / "a" / "tokenizer_config.json"
    original = victim.read_bytes()
    swapper = tmp_path / "mlc_llm_swapping"  # the toolchain, with the attacker's swap as gen_config starts
    swapper.write_text(
        f"#!{sys.executable}\nimport os, runpy, sys\n"
        f"if sys.argv[1:2] == ['gen_config']:\n    os.unlink({str(victim)!r}); os.symlink({str(secret)!r}, {str(victim)!r})\n"
        "sys.argv[0] = 'mlc_llm'\nrunpy.run_module('mlc_llm', run_name='__main__', alter_sys=True)\n"
    )
    swapper.chmod(0o755)
    store = tmp_path / "store"
    args = ("build", "--matrix", str(tmp_path / "matrix.yaml"), "--store", str(store))
    first = cli(*args, env={"MLC_FARM_MLC_LLM": str(swapper)})
    assert victim.is_symlink(), first.stdout + first.stderr  # the swap happened, during the build

    def leaked() -> list[str]:
        return [str(p) for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p != secret
                and b"SECRET-OF-THE-USER" in p.read_bytes()]  # fmt: skip

    assert leaked() == []
    victim.unlink()
    victim.write_bytes(original)  # put back: the next nightly reuses nothing that read the secret
    again = cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "pulled"), "--store", str(store)).returncode
        == 0
    )
    assert leaked() == [] and (tmp_path / "pulled" / "tokenizer_config.json").read_bytes() == original


def test_a_staged_source_is_exactly_what_was_checked(tiny_models: Path, tmp_path: Path) -> None:
    """Staging opens each file without following a link and copies what is not weights, hashed against the key."""
    from mlc_farm.errors import ValidationFailed
    from mlc_farm.planning.sources import fetch, resolve_local

    model = Path(shutil.copytree(tiny_models / "models" / "a", tmp_path / "a"))
    files = fetch(resolve_local("m", model))
    staged = files.stage(tmp_path / "staged")
    assert not (staged / "tokenizer_config.json").is_symlink() and (staged / "model.safetensors").exists()
    (model / "tokenizer.json").write_text("{}")  # changed after its key was made
    with pytest.raises(ValidationFailed, match=r"tokenizer\.json changed after it was checked"):
        files.stage(tmp_path / "again")
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValidationFailed, match=r"config\.json is no longer the file that was checked"):
        files.stage(tmp_path / "third")
