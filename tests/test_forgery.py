"""Signatures a bucket writer cannot forge (issue 37): each attack as someone who can write to the store, and holds
no key, would make it, against a user who trusts only the farm's public key.

The farm signs what its builds made where they made it (attestations) and never a digest the store lists: a
swapped library is neither reused, nor signed, nor published, whether its entry's signature is deleted, kept or
stepped around with a new build key. An entry binds its name and its time: copied under another name, put back
after a newer one was seen, or expired, it is refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlc_farm.records.reads import load_record, read_entry
from mlc_farm.records.schema import CatalogEntry, FileEntry
from mlc_farm.store.layout import catalog_path, folder_signature_path, record_path
from mlc_farm.store.local import LocalStore
from mlc_farm.trust import dsse
from mlc_farm.trust.keys import signing_key
from tests.helpers import DOUBLE, MLC_LLM_SOURCE, ROOT, cli, farm_edit, run_cli
from tests.hub_server import LocalHub

# One worker runs the module (scripts/test.sh schedules by xdist group), so its store is built once per run:
# a module fixture is made again each time a worker comes back to a module, five times per run before.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api"), pytest.mark.xdist_group("forgery")]

MATRIX = """
quantizations: [q0f16, q4f16_1]
devices: [{name: cpu, family: cpu, target: llvm}]
models:
  - {id: tiny-llama-a, source: {path: models/a}, conv_template: LM}
  - {id: tiny-llama-b, source: {path: models/b}, conv_template: LM}
"""
EVIL = b"\x7fELF the attacker's library"


@pytest.fixture(scope="module")
def built(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory, prefect_api: str) -> Path:
    """2 models x 2 quantizations on cpu, built once for the module against the run's Prefect server (each test
    works on its own copy)."""
    root = tmp_path_factory.mktemp("forgery")
    (tiny_models / "forgery.yaml").write_text(MATRIX)
    (tiny_models / "forgery-publish.yaml").write_text(MATRIX + "publish: {org: farm-org}\n")
    env = {**os.environ, "PREFECT_API_URL": prefect_api} | {
        "PYTHONPATH": os.pathsep.join([str(DOUBLE), str(ROOT)]),
        "PATH": os.pathsep.join([str(DOUBLE / "bin"), os.environ["PATH"]]),
        "MLC_LLM_SOURCE_DIR": str(MLC_LLM_SOURCE), "MLC_FARM_WORK_DIR": str(root / "work"),
        "MLC_FARM_CACHE": str(root / "cache"), "PREFECT_HOME": str(root / "prefect"), "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    args = ["build", "--matrix", str(tiny_models / "forgery.yaml"), "--store", str(root / "store")]
    done = subprocess.run([sys.executable, "-m", "mlc_farm.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "store"


@pytest.fixture
def store(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "store"))


def nightly(store: Path, tiny_models: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    done = cli("build", "--matrix", str(tiny_models / "forgery.yaml"), "--store", str(store), *extra, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def entry(store: Path, model: str = "tiny-llama-a", quantization: str = "q4f16_1") -> CatalogEntry:
    found = read_entry(LocalStore(store), model, quantization)
    assert found is not None
    return found


def swap_library(store: Path, new_key: str | None = None) -> str:
    """The attacker's library as a blob, its record rewritten to match (or written under `new_key`) and the entry
    pointing at it, as someone with write access to the bucket does; the evil blob's sha256."""
    st, sha = LocalStore(store), hashlib.sha256(EVIL).hexdigest()
    (store.parent / "evil.so").write_bytes(EVIL)
    st.put_blob(store.parent / "evil.so", sha)
    doc = entry(store).model_dump(mode="json")
    record = load_record(st, doc["libs"]["cpu"]["key"])
    assert record is not None
    lib = FileEntry(path=record.files[0].path, size=len(EVIL), sha256=sha)
    record = record.model_copy(update={"files": [lib], "key": new_key or record.key})
    (store / record_path(record.key)).write_text(record.model_dump_json())
    doc["libs"]["cpu"].update(key=record.key, file=lib.model_dump())
    (store / catalog_path("tiny-llama-a", "q4f16_1")).write_text(json.dumps(doc))
    return sha


def pull(store: Path, out: Path, *extra: str, model: str = "tiny-llama-a", quantization: str = "q4f16_1"):
    return run_cli("pull", model, quantization, "-o", str(out), "--store", str(store), *extra)


def lib_bytes(folder: Path) -> bytes:
    return next((folder / "libs").iterdir()).read_bytes()


@pytest.mark.slow
def test_a_swapped_library_is_never_signed_nor_served_with_its_signature_deleted(
    store: Path, tiny_models: Path, tmp_path: Path
) -> None:
    genuine = entry(store).libs["cpu"].file.sha256
    doc = json.loads((store / catalog_path("tiny-llama-a", "q4f16_1")).read_text())
    swap_library(store)
    doc = json.loads((store / catalog_path("tiny-llama-a", "q4f16_1")).read_text())
    doc["signature"] = None  # the signature deleted too
    (store / catalog_path("tiny-llama-a", "q4f16_1")).write_text(json.dumps(doc))
    for extra in ((), ("--allow-unsigned",)):
        refused = pull(store, tmp_path / "out", *extra)
        assert refused.returncode == 1 and not (tmp_path / "out").exists(), refused.stderr
    assert "carries an attestation" in refused.stderr  # --allow-unsigned does not take a stripped entry
    said = nightly(store, tiny_models)  # the record's attestation fails: the library is built again, never signed
    assert "library 1 built" in said or "1 built" in said, said
    assert entry(store).libs["cpu"].file.sha256 == genuine and entry(store).signature is not None
    assert pull(store, tmp_path / "out").returncode == 0
    assert lib_bytes(tmp_path / "out") != EVIL


@pytest.mark.slow
def test_a_swapped_library_with_its_signature_kept_is_neither_pulled_nor_published(
    store: Path, tiny_models: Path, tmp_path: Path, hub: LocalHub
) -> None:
    swap_library(store)
    for args in (["pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "out")],
                 ["install", "tiny-llama-a", "q4f16_1", "--mlc-home", str(tmp_path / "mlc"), "--any-runtime"],
                 ["validate", "tiny-llama-a", "q4f16_1"], ["export", "mlc-serve", "--base-url", "https://m.example"],
                 ["publish", "tiny-llama-a", "q4f16_1", "--matrix", str(tiny_models / "forgery-publish.yaml")],
                 ["provenance", "tiny-llama-a", "q4f16_1"]):  # fmt: skip
        refused = run_cli(*args, "--store", str(store), "--allow-unsigned") if args[0] in ("pull", "install") else \
            run_cli(*args, "--store", str(store))  # fmt: skip
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "not the one the farm signed" in said, (args, said)
    assert not (tmp_path / "out").exists() and not (tmp_path / "mlc").exists()
    assert "farm-org/tiny-llama-a-q4f16_1-MLC" not in hub.state.repos  # nothing was pushed, not even a repo
    problems = run_cli("verify", "--store", str(store))
    assert problems.returncode == 1 and "not the one the farm signed" in " ".join(problems.stderr.split())


@pytest.mark.slow
def test_a_swapped_library_under_a_new_build_key_is_not_taken_by_allow_unsigned_nor_signed(
    store: Path, tiny_models: Path, tmp_path: Path
) -> None:
    swap_library(store, new_key="e" * 64)
    doc = json.loads((store / catalog_path("tiny-llama-a", "q4f16_1")).read_text())
    doc["signature"] = None
    (store / catalog_path("tiny-llama-a", "q4f16_1")).write_text(json.dumps(doc))
    refused = pull(store, tmp_path / "out", "--allow-unsigned")
    assert refused.returncode == 1 and "carries an attestation" in refused.stderr, refused.stderr
    nightly(store, tiny_models)  # the entry is not the farm's: tonight's attested builds replace it, signed
    assert entry(store).libs["cpu"].key != "e" * 64 and entry(store).signature is not None
    assert pull(store, tmp_path / "out").returncode == 0 and lib_bytes(tmp_path / "out") != EVIL


def test_an_entry_copied_under_another_name_is_refused(store: Path, tmp_path: Path) -> None:
    a = store / catalog_path("tiny-llama-a", "q0f16")
    for model, quantization in (("tiny-llama-b", "q0f16"), ("tiny-llama-a", "q4f16_1")):
        shutil.copy(a, store / catalog_path(model, quantization))
        refused = pull(store, tmp_path / "out", model=model, quantization=quantization)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 1 and "its signature is for tiny-llama-a q0f16" in said, said
        assert "an entry copied under another name" in said and not (tmp_path / "out").exists()


def test_an_older_entry_put_back_is_refused_and_an_expired_one_unless_allowed(store: Path, tmp_path: Path) -> None:
    path = store / catalog_path("tiny-llama-a", "q4f16_1")
    old = path.read_bytes()
    assert pull(store, tmp_path / "first").returncode == 0
    farm_edit(store, "tiny-llama-a", "q4f16_1", lambda doc: doc["source"].update(license="mit"))  # moved on
    assert pull(store, tmp_path / "second").returncode == 0  # this machine has now seen the newer version
    path.write_bytes(old)  # the attacker puts the older one back, with its genuine old signature
    refused = pull(store, tmp_path / "third")
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "a rollback" in said and not (tmp_path / "third").exists(), said
    # Expired: signed eight days ago (the default validity is seven) and never renewed; a new machine (cache).
    farm_edit(store, "tiny-llama-a", "q0f16", signed_at=datetime.now(timezone.utc) - timedelta(days=8))
    fresh = {"MLC_FARM_CACHE": str(tmp_path / "new-machine")}
    refused = run_cli("pull", "tiny-llama-a", "q0f16", "-o", str(tmp_path / "x"), "--store", str(store), env=fresh)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "expired on" in said and "--allow-expired" in said, said
    taken = run_cli("pull", "tiny-llama-a", "q0f16", "-o", str(tmp_path / "x"), "--store", str(store),
                    "--allow-expired", env=fresh)  # fmt: skip
    assert taken.returncode == 0 and "taken anyway (--allow-expired)" in " ".join(taken.stderr.split())
    problems = run_cli("verify", "--store", str(store))
    assert problems.returncode == 1 and "expired on" in problems.stderr


def test_provenance_placed_under_another_entry_is_refused(store: Path) -> None:
    st = LocalStore(store)
    a, b = entry(store), entry(store, "tiny-llama-b")
    named_a = dsse.verify(a.signature, [signing_key().public], "a").statement["predicate"]["mlc_farm"]["provenance"]
    named_b = dsse.verify(b.signature, [signing_key().public], "b").statement["predicate"]["mlc_farm"]["provenance"]
    shutil.copy(store / folder_signature_path(named_b), store / folder_signature_path(named_a))
    refused = run_cli("provenance", "tiny-llama-a", "q4f16_1", "--store", str(store))
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 1 and "not the one its signature names" in said, said
    assert st.read_json(folder_signature_path(named_b)) is not None


@pytest.mark.slow
def test_validate_dir_refuses_a_library_swapped_in_the_store_and_the_folder(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    assert pull(store, out).returncode == 0
    swap_library(store)
    next((out / "libs").iterdir()).write_bytes(EVIL)
    refused = run_cli("validate", "tiny-llama-a", "q4f16_1", "--dir", str(out), "--store", str(store))
    assert refused.returncode == 1 and "not the one the farm signed" in " ".join(refused.stderr.split())


@pytest.mark.slow
def test_a_rotated_key_and_a_rebuild_with_other_bytes_leave_every_entry_pullable(
    store: Path, tiny_models: Path, tmp_path: Path
) -> None:
    old = signing_key()
    new = tmp_path / "keys" / "new.pem"
    new.parent.mkdir(mode=0o700)
    new.touch(mode=0o600)
    new.write_bytes(dsse.new_private_key())
    pubs = tmp_path / "keys" / "old.pub", tmp_path / "keys" / "new.pub"
    pubs[0].write_bytes(old.public)
    pubs[1].write_bytes(dsse.SigningKey(new.read_bytes()).public)
    rotating = {"MLC_FARM_SIGNING_KEY": str(new), "MLC_FARM_TRUSTED_KEYS": f"{pubs[0]},{pubs[1]}"}
    nightly(store, tiny_models, env=rotating)  # nothing to build: every entry is signed again with the new key
    only_new = {"MLC_FARM_TRUSTED_KEYS": str(pubs[1]), "MLC_FARM_CACHE": str(tmp_path / "user")}
    for quantization in ("q0f16", "q4f16_1"):
        for model in ("tiny-llama-a", "tiny-llama-b"):
            pulled = run_cli("pull", model, quantization, "-o", str(tmp_path / model / quantization),
                             "--store", str(store), env=only_new)  # fmt: skip
            assert pulled.returncode == 0, pulled.stderr
    # A converter that is not byte-reproducible: the same keys rebuilt with other bytes; signed again.
    before = load_record(LocalStore(store), entry(store).convert)
    nightly(store, tiny_models, "--force", env={**rotating, "MLC_DOUBLE_CONVERT_CHANGE": "llama"})
    after = load_record(LocalStore(store), entry(store).convert)
    assert before and after and before.key == after.key and before.files != after.files
    assert run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "again"), "--store", str(store),
                   env=only_new).returncode == 0  # fmt: skip
    assert run_cli("verify", "--store", str(store), env=rotating).returncode == 0


def test_a_nightly_renews_a_signature_older_than_the_renewal_window_and_only_that(
    store: Path, tiny_models: Path
) -> None:
    """MLC_FARM_SIGNATURE_RENEW_HOURS (20): an entry signed 21 hours ago is signed again by a nightly with nothing
    to build, one signed an hour ago is left as it is (the window is read once per run, not per entry)."""
    from mlc_farm.trust.entry_signatures import signed
    from mlc_farm.trust.keys import trusted_keys

    now = datetime.now(timezone.utc)
    farm_edit(store, "tiny-llama-a", "q0f16", signed_at=now - timedelta(hours=21))
    farm_edit(store, "tiny-llama-b", "q0f16", signed_at=now - timedelta(hours=1))
    nightly(store, tiny_models)
    a, b = (signed(e, e.model, e.quantization, trusted_keys()).signed_at
            for e in (entry(store, "tiny-llama-a", "q0f16"), entry(store, "tiny-llama-b", "q0f16")))  # fmt: skip
    assert a >= now and abs(b - (now - timedelta(hours=1))) < timedelta(seconds=1)


def test_entries_a_run_read_are_not_read_again_and_one_deleted_since_is_not_listed(store: Path) -> None:
    """The page takes the entries the catalog update read and left as they were (it still verifies their
    signatures), reads the others, and lists only what the store holds now."""
    from mlc_farm.records.reads import entries

    st = LocalStore(store)
    listed = entries(st)
    kept = listed[0].model_copy()
    gone = listed[1].model_copy()
    (store / catalog_path(gone.model, gone.quantization)).unlink()
    again = entries(st, [kept, gone])
    assert [(e.model, e.quantization) for e in again] == [(e.model, e.quantization) for e in listed if e != listed[1]]
    assert again[0] is kept and all(e is not gone for e in again)


def test_a_farm_run_without_the_farm_key_refuses_before_it_builds(tiny_models: Path, monkeypatch) -> None:
    from mlc_farm.building.run import RunFailed
    from mlc_farm.flows.nightly import nightly_build, run_result

    monkeypatch.delenv("MLC_FARM_SIGNING_KEY")
    state = nightly_build(str(tiny_models / "forgery.yaml"), store=str(tiny_models / "no-store"), mode="farm",
                          return_state=True)  # fmt: skip
    result = run_result(state)
    assert state.is_failed() and result.reason == "refused", result
    assert "farm mode needs the farm's signing key: set MLC_FARM_SIGNING_KEY_BLOCK" in result.message
    # Called for its result, the failed run raises what it carries, never Prefect's "Unexpected result" TypeError.
    with pytest.raises(RunFailed, match="farm mode needs the farm's signing key") as raised:
        nightly_build(str(tiny_models / "forgery.yaml"), store=str(tiny_models / "no-store"), mode="farm")
    assert raised.value.result == result
    assert not (tiny_models / "no-store").exists()


def test_a_killed_signer_leaves_no_private_key_on_disk(tmp_path: Path) -> None:
    """The key is signed with in memory: a signer SIGKILLed mid-signature leaves no copy of it in TMPDIR."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    code = ("import itertools; from mlc_farm.trust import keys, signatures; k = keys.signing_key()\n"
            "for i in itertools.count():\n    signatures.sign({'a': '0' * 64}, 'm', k)\n"
            "    if i == 100: print('signing', flush=True)")  # fmt: skip
    signer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "TMPDIR": str(tmp)})  # fmt: skip
    assert signer.stdout and signer.stdout.readline() == "signing\n"  # a hundred signatures made, more under way
    signer.send_signal(signal.SIGKILL)
    signer.wait()
    body = b"".join(signing_key().pem.splitlines()[1:-1])
    assert not any(body[:40] in p.read_bytes() for p in tmp.rglob("*") if p.is_file())
    assert list(tmp.iterdir()) == []


def test_an_unsigned_published_document_names_nothing(store: Path, tmp_path: Path) -> None:
    """A `published/` document the farm did not sign cannot rename install's default `HF://` name to a well-known
    repo, nor point an export at it."""
    e = entry(store)
    planted = {"repo": "meta-llama/Llama-3.1-8B-Instruct", "commit": None, "convert": e.convert,
               "config": e.config, "libs": {d: r.key for d, r in e.libs.items()}}  # fmt: skip
    path = store / "published" / "tiny-llama-a" / "q4f16_1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(planted))
    done = run_cli("install", "tiny-llama-a", "q4f16_1", "--mlc-home", str(tmp_path / "mlc"), "--any-runtime",
                   "--store", str(store))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "meta-llama" not in done.stdout and "HF://mlc-farm/tiny-llama-a-q4f16_1-MLC" in " ".join(done.stdout.split())
    exported = run_cli("export", "mlc-serve", "--model", "tiny-llama-a", "--store", str(store))
    assert exported.returncode == 2 and "meta-llama" not in exported.stdout + exported.stderr


def test_a_pull_follows_the_umask(store: Path, tmp_path: Path) -> None:
    """Pulled folders are 0755 and their files 0644 under umask 022 (a web server or a fleet can read them)."""
    old = os.umask(0o022)
    try:
        assert pull(store, tmp_path / "out").returncode == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in (tmp_path / "out").rglob("*")}
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755
    assert all(m == (0o755 if (tmp_path / p).is_dir() else 0o644) for p, m in modes.items()), modes


def test_ls_fits_80_columns_without_breaking_a_word(store: Path) -> None:
    """(Issue 39, item 5; this module's store serves.) At 80 columns `ls` prints no line wider than the terminal and
    breaks no word: every word is one the wide layout prints whole."""
    narrow = cli("ls", "--store", str(store), env={"COLUMNS": "80"})  # a process of its own: its consoles' width
    wide = cli("ls", "--store", str(store), env={"COLUMNS": "300"})
    assert narrow.returncode == 0 and wide.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80, narrow.stdout

    def words(text: str) -> set[str]:
        return {w.strip(",;:") for w in text.split()}

    assert words(narrow.stdout) <= words(wide.stdout) | {"built", "weights"}, words(narrow.stdout) - words(wide.stdout)
    assert "tiny-llama-a q4f16_1: cpu; weights" in narrow.stdout


def test_history_plan_and_the_publish_dry_run_fit_80_columns(store: Path, tiny_models: Path) -> None:
    """(Issue 39, item 5; this module's store serves.) At 80 columns no line is wider than the terminal and no
    value is cut: history prints a block per toolchain, the dry-run's paths stay whole (its sha256s to 12)."""
    narrow = {"COLUMNS": "80", "HF_HUB_OFFLINE": "1"}
    said = {
        "history": cli("history", "tiny-llama-a", "q4f16_1", "--store", str(store), env=narrow),
        "plan": cli("plan", "--matrix", str(tiny_models / "forgery.yaml"), "--store", str(store), env=narrow),
    }
    publish = tiny_models / "forgery-publish.yaml"
    said["dry-run"] = cli("publish", "tiny-llama-a", "q4f16_1", "--matrix", str(publish), "--dry-run", "--store",
                          str(store), env=narrow)  # fmt: skip
    for name, done in said.items():
        lines = (done.stdout + done.stderr).splitlines()
        assert done.returncode == 0 and lines, (name, done.stdout + done.stderr)
        assert max(map(len, lines)) <= 80 and "…" not in done.stdout, (name, done.stdout + done.stderr)
    assert "decode tok/s" in said["history"].stdout and "top-1" in said["history"].stdout
    library = entry(store).libs["cpu"]
    assert f"libs/tiny-llama-a-q4f16_1-cpu-{library.file.sha256[:12]}.so" in said["dry-run"].stdout


def test_a_missing_device_is_exit_2_as_a_missing_model(store: Path, tmp_path: Path) -> None:
    """(Issue 39, item 7; this module's store serves.) Asking for a device the entry has no library for is bad
    input, exit 2, as asking for a model the catalog does not have."""
    said = run_cli("pull", "tiny-llama-a", "q4f16_1", "--device", "nope", "-o", str(tmp_path / "o"),
                   "--store", str(store))  # fmt: skip
    assert said.returncode == 2 and "has no library for device 'nope'; built: cpu" in said.stderr, said.stderr
    assert not (tmp_path / "o").exists()
