"""Signed artifacts: every catalog entry and published folder carries the farm's signature in the OpenSSF
model-signing format; model-signing's own verifier (library and command) accepts a published folder and refuses
one changed, added or removed file; `pull` and `install` refuse a store whose blob was swapped with its record
rewritten to match, and an unsigned store unless told."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mlc_farm.errors import BadInput
from mlc_farm.records.reads import load_record, read_entry
from mlc_farm.records.schema import CatalogEntry, FileEntry
from mlc_farm.store.layout import record_path
from mlc_farm.store.local import LocalStore
from mlc_farm.trust import dsse, provenance, signatures
from mlc_farm.trust.keys import signing_key, trusted_keys
from tests.helpers import ONE_CELL, ROOT, built_store, cli, run_cli
from tests.hub_server import LocalHub


def library_verifies(folder: Path, public: Path, command: bool = False) -> bool:
    """model-signing's own verifier, as a library, and as its command too (`command`: a new interpreter each,
    seconds): both must agree."""
    from model_signing import verifying

    try:
        verifying.Config().use_elliptic_key_verifier(public_key=public).verify(folder, folder / signatures.SIGNATURE)
        by_library = True
    except ValueError:
        by_library = False
    if command:
        argv = [str(Path(sys.executable).with_name("model_signing")), "verify", "key", "--signature",
                str(folder / signatures.SIGNATURE), "--public_key", str(public), str(folder)]  # fmt: skip
        by_command = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).returncode == 0
        assert by_library == by_command, (folder, by_library, by_command)
    return by_library


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def tampered_copies(folder: Path, tmp: Path) -> dict[str, Path]:
    """The folder with one byte of each file changed, a file added, a file removed."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != signatures.SIGNATURE):
        rel = path.relative_to(folder).as_posix()
        copy = Path(shutil.copytree(folder, tmp / f"changed-{len(out)}"))
        data = bytearray((copy / rel).read_bytes())
        data[len(data) // 2] ^= 1
        (copy / rel).write_bytes(bytes(data))
        out[f"one byte of {rel}"] = copy
    added = Path(shutil.copytree(folder, tmp / "added"))
    (added / "libs" / "extra.so").write_bytes(b"\x7fELF not the farm's")
    out["a file added"] = added
    removed = Path(shutil.copytree(folder, tmp / "removed"))
    (removed / "tokenizer.json").unlink()
    out["a file removed"] = removed
    return out


def test_a_signed_folder_verifies_and_any_change_is_caught(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "m", {"params_shard_0.bin": b"w" * 1000, "tokenizer.json": b"{}",
                                           "libs/m-cpu.so": b"\x7fELF lib"})  # fmt: skip
    files = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in folder.rglob("*") if p.is_file()}  # fmt: skip
    (folder / signatures.SIGNATURE).write_text(json.dumps(signatures.sign(files, "m", signing_key())))
    public = tmp_path / "farm.pub"
    public.write_bytes(trusted_keys()[0])
    assert library_verifies(folder, public, command=True)
    assert signatures.verify_folder(folder, trusted_keys()) == files
    for what, copy in tampered_copies(folder, tmp_path).items():
        assert not library_verifies(copy, public, command=what == "a file added"), what
        with pytest.raises(signatures.SignatureRefused):
            signatures.verify_folder(copy, trusted_keys())
    stranger = dsse.public_key(dsse.new_private_key())
    with pytest.raises(signatures.SignatureRefused, match="not made by a trusted key"):
        signatures.verify_folder(folder, [stranger])


def entry_now(store: Path) -> CatalogEntry:
    entry = read_entry(LocalStore(store), "tiny-llama-a", "q4f16_1")
    assert entry is not None
    return entry


def swap_blob(store: Path, record_key: str, path: str, data: bytes) -> None:
    """What an attacker with write access to the bucket does: a new blob, and the record rewritten to match."""
    st = LocalStore(store)
    blob = store.parent / "evil.bin"
    blob.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    st.put_blob(blob, sha)
    record = load_record(st, record_key)
    assert record is not None
    files = [FileEntry(path=f.path, size=len(data), sha256=sha) if f.path == path else f for f in record.files]
    (store / record_path(record_key)).write_text(record.model_copy(update={"files": files}).model_dump_json())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_published_and_pulled_folders_are_signed_and_a_swapped_blob_is_refused(
    hub: LocalHub, tiny_models: Path, tmp_path: Path
) -> None:
    store, _ = built_store(tiny_models, tmp_path)
    public = tmp_path / "farm.pub"
    public.write_bytes(trusted_keys()[0])

    # The published folder, as anyone downloads it, verifies with model-signing alone; any change is caught.
    repo = "farm-org/tiny-llama-a-q4f16_1-MLC"
    published = write_folder(tmp_path / "published", {p: f.data for p, f in hub.commits(repo)[-1].files.items()})
    assert library_verifies(published, public, command=True)
    said = run_cli("verify-signature", str(published))
    assert said.returncode == 0 and "each as the farm signed it" in said.stdout, said.stdout + said.stderr
    card = (published / "README.md").read_text()
    assert dsse.fingerprint(trusted_keys()[0]) in card and "model_signing verify key" in card
    for what, copy in tampered_copies(published, tmp_path).items():
        assert not library_verifies(copy, public), what
        refused = run_cli("verify-signature", str(copy))
        assert refused.returncode == 1 and "refused" in refused.stderr, (what, refused.stderr)

    # The signed provenance: every other file as subject, the source, the toolchain and the fingerprint.
    statement = dsse.verify((published / provenance.FILE).read_text(), trusted_keys(), "provenance").statement
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    on_hub = {p: hashlib.sha256((published / p).read_bytes()).hexdigest() for p in signatures.folder_files(published)}
    # The entry's signed provenance: its pull's files (the card and manifest are the folder's, under model.sig).
    assert subjects == {
        p: h for p, h in on_hub.items() if p not in (provenance.FILE, "README.md", "mlc-farm-manifest.json")
    }
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    build = statement["predicate"]["buildDefinition"]
    source = build["resolvedDependencies"][0]
    assert source["digest"]["sha256"] == entry_now(store).source["identity"]
    assert set(source["annotations"]["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert build["internalParameters"]["toolchain"]["mlc_llm_version"] == "0.20.0.dev0"
    assert len(build["internalParameters"]["conversion_fingerprint"]) == 64
    assert build["externalParameters"]["devices"]["cpu"]["target"] == "llvm"
    runs = statement["predicate"]["runDetails"]
    assert runs["metadata"]["invocationId"] and all(b["annotations"]["host"] for b in runs["byproducts"])
    assert provenance.FILE in (published / "README.md").read_text()
    printed = run_cli("provenance", "tiny-llama-a", "q4f16_1", "--store", str(store))
    assert printed.returncode == 0, printed.stderr
    pull_files = {s["name"] for s in json.loads(printed.stdout)["subject"]}
    assert pull_files == set(subjects) - {"README.md", "mlc-farm-manifest.json"}
    one = run_cli("provenance", "tiny-llama-a", "q4f16_1", "cpu", "--bundle", "--store", str(store))
    assert (
        dsse.verify(one.stdout, trusted_keys(), "bundle").statement["subject"] == json.loads(printed.stdout)["subject"]
    )
    page = json.loads((store / "catalog.json").read_text())
    assert dsse.fingerprint(trusted_keys()[0]) in page["verify"]
    assert page["rows"][0]["files"]["provenance"].endswith(provenance.FILE)

    # A whole pull carries the entry's signature, which model-signing accepts too.
    pulled = tmp_path / "pulled"
    assert run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(pulled), "--store", str(store)).returncode == 0
    assert library_verifies(pulled, public)

    # The bucket's attacker swaps the tokenizer and rewrites the record: pull and install refuse, write nothing.
    entry = entry_now(store)
    swap_blob(store, entry.config, "tokenizer.json", b'{"model": "evil"}')
    for args in (["pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "again")],
                 ["install", "tiny-llama-a", "q4f16_1", "--mlc-home", str(tmp_path / "mlc"), "--any-runtime"]):  # fmt: skip
        refused = run_cli(*args, "--store", str(store), "--allow-unsigned")
        said = refused.stderr.replace("\n", "")
        assert refused.returncode == 1 and "tokenizer.json is not the file the farm signed" in said, said
    assert not (tmp_path / "again").exists() and not (tmp_path / "mlc").exists()

    # A store from before signatures (no attestation, no signature): refused, unless --allow-unsigned, with a
    # warning, on a machine that never verified this entry signed (this one did: refused whatever the flag).
    as_before_signatures(store)
    refused = run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "unsigned"), "--store", str(store))
    assert refused.returncode == 1 and "the entry is unsigned" in refused.stderr
    assert not (tmp_path / "unsigned").exists()
    allowed = ("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "unsigned"), "--store", str(store),
               "--allow-unsigned")  # fmt: skip
    refused = run_cli(*allowed)
    assert refused.returncode == 1 and "verified a signed version of it before" in " ".join(refused.stderr.split())
    taken = run_cli(*allowed, env={"MLC_FARM_CACHE": str(tmp_path / "new-machine")})
    assert taken.returncode == 0 and "none of its builds carries an attestation" in " ".join(taken.stderr.split())
    assert not (tmp_path / "unsigned" / signatures.SIGNATURE).exists()


def as_before_signatures(store: Path) -> None:
    """Every record without its attestation and every entry without its signature, as a store written before
    them has it."""
    for folder, field in (("builds", "attestation"), ("catalog", "signature")):
        for path in (store / folder).rglob("*.json"):
            doc = json.loads(path.read_text())
            doc.pop(field, None)
            path.write_text(json.dumps(doc))


@pytest.mark.usefixtures("prefect_api")
def test_farm_init_makes_the_signing_key_once(tiny_matrix: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLC_FARM_SIGNING_KEY")
    monkeypatch.setenv("MLC_FARM_SIGNING_KEY_BLOCK", f"key-{uuid.uuid4().hex[:12]}")
    first = run_cli("farm", "init", "--matrix", str(tiny_matrix), "--signing-key")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "a new signing key" in first.stdout and "BEGIN PUBLIC KEY" in first.stdout
    assert "PRIVATE" not in first.stdout + first.stderr
    again = run_cli("farm", "init", "--matrix", str(tiny_matrix), "--signing-key")
    assert "as it was" in again.stdout
    public = first.stdout[first.stdout.index("-----BEGIN PUBLIC KEY") :].split("-----END PUBLIC KEY-----")[0]
    assert public in again.stdout
    assert signing_key().public.decode().startswith(public)  # the block's key signs from now on


def test_a_machine_given_no_key_makes_its_own_once_and_trusts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLC_FARM_SIGNING_KEY")
    made = signing_key()
    path = tmp_path / "cache" / "signing" / "private.pem"  # MLC_FARM_CACHE of the test
    assert path.read_bytes() == made.pem and path.stat().st_mode & 0o777 == 0o600
    assert signing_key() == made and trusted_keys() == [made.public]
    assert [p.name for p in path.parent.iterdir()] == ["private.pem"]
    monkeypatch.setenv("MLC_FARM_TRUSTED_KEYS", str(tmp_path / "missing.pub"))
    with pytest.raises(BadInput, match=r"MLC_FARM_TRUSTED_KEYS=.*missing\.pub.*No such file"):
        trusted_keys()


def test_a_key_someone_else_could_have_written_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A private key planted in a writable MLC_FARM_CACHE, or given in a file others can read or write, or in a
    directory others can write, is refused naming why; so is a trusted public key in such a directory."""
    monkeypatch.delenv("MLC_FARM_SIGNING_KEY")
    planted = tmp_path / "cache" / "signing"
    planted.mkdir(parents=True)
    planted.chmod(0o777)  # a cache others can write: a key found there may be theirs
    (planted / "private.pem").write_bytes(dsse.new_private_key())
    (planted / "private.pem").chmod(0o600)
    with pytest.raises(BadInput, match="others can write its directory"):
        signing_key()
    mine = tmp_path / "keys"
    mine.mkdir(mode=0o700)
    key = mine / "farm.pem"
    key.write_bytes(dsse.new_private_key())
    monkeypatch.setenv("MLC_FARM_SIGNING_KEY", str(key))
    key.chmod(0o644)
    with pytest.raises(BadInput, match=r"others can read it \(mode 644; chmod 600 it\)"):
        signing_key()
    key.chmod(0o600)
    assert signing_key().public.startswith(b"-----BEGIN PUBLIC KEY")
    public = planted / "farm.pub"
    public.write_bytes(signing_key().public)
    monkeypatch.setenv("MLC_FARM_TRUSTED_KEYS", str(public))
    with pytest.raises(BadInput, match=r"MLC_FARM_TRUSTED_KEYS=.*others can write its directory"):
        trusted_keys()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_store_from_before_attestations_is_signed_only_when_an_operator_says_so(
    tiny_models: Path, tmp_path: Path
) -> None:
    """The nightly never signs what its builds did not attest (it builds them again); `resign --adopt` takes the
    store as it is, hashing every blob again against its record first."""
    store, matrix = built_store(tiny_models, tmp_path, ONE_CELL.replace("publish: {org: farm-org}\n", ""))
    as_before_signatures(store)
    again = shutil.copytree(store, tmp_path / "again")
    out = tmp_path / "out"
    assert run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(out), "--store", str(store)).returncode == 1
    left = run_cli("resign", "--store", str(store))
    assert left.returncode == 1 and "left tiny-llama-a q4f16_1: unsigned" in left.stdout, left.stdout
    adopted = run_cli("resign", "--adopt", "--store", str(store))
    assert adopted.returncode == 0 and "every record without an attestation is taken" in adopted.stderr
    assert "attested builds/" in adopted.stdout and "signed tiny-llama-a q4f16_1" in adopted.stdout
    assert run_cli("verify", "--store", str(store)).returncode == 0
    pulled = run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(out), "--store", str(store))
    assert pulled.returncode == 0, pulled.stderr
    assert signatures.verify_folder(out, trusted_keys())
    rebuilt = cli("build", "--matrix", str(matrix), "--store", str(again))  # no operator: built again, then signed
    assert rebuilt.returncode == 0 and "0 builds to run" not in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    assert run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "o2"), "--store", str(again)).returncode == 0
