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
from mlc_farm.trust import provenance, signatures
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
    (folder / signatures.SIGNATURE).write_text(signatures.sign(files, "m", signing_key()))
    public = tmp_path / "farm.pub"
    public.write_bytes(trusted_keys()[0])
    assert library_verifies(folder, public, command=True)
    assert signatures.verify_folder(folder, trusted_keys()) == files
    for what, copy in tampered_copies(folder, tmp_path).items():
        assert not library_verifies(copy, public, command=what == "a file added"), what
        with pytest.raises(signatures.SignatureRefused):
            signatures.verify_folder(copy, trusted_keys())
    stranger = signatures.public_key(signatures.new_private_key())
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
    assert signatures.fingerprint(trusted_keys()[0]) in card and "model_signing verify key" in card
    for what, copy in tampered_copies(published, tmp_path).items():
        assert not library_verifies(copy, public), what
        refused = run_cli("verify-signature", str(copy))
        assert refused.returncode == 1 and "refused" in refused.stderr, (what, refused.stderr)

    # The signed provenance: every other file as subject, the source, the toolchain and the fingerprint.
    statement = signatures.signed_statement((published / provenance.FILE).read_text(), trusted_keys(), "provenance")
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    on_hub = {p: hashlib.sha256((published / p).read_bytes()).hexdigest() for p in signatures.folder_files(published)}
    assert subjects == {p: h for p, h in on_hub.items() if p != provenance.FILE}
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
        signatures.signed_statement(one.stdout, trusted_keys(), "bundle")["subject"]
        == json.loads(printed.stdout)["subject"]
    )
    page = json.loads((store / "catalog.json").read_text())
    assert signatures.fingerprint(trusted_keys()[0]) in page["verify"]
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

    # An unsigned store: refused, unless --allow-unsigned (with a warning).
    shutil.rmtree(store / "signatures")
    swap_blob(store, entry.config, "tokenizer.json", json.dumps({"version": "1.0"}).encode())
    refused = run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "unsigned"), "--store", str(store))
    assert refused.returncode == 1 and "holds no signature" in refused.stderr and not (tmp_path / "unsigned").exists()
    taken = run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "unsigned"), "--store", str(store),
                    "--allow-unsigned")  # fmt: skip
    assert taken.returncode == 0 and "unsigned" in taken.stderr, taken.stderr
    assert not (tmp_path / "unsigned" / signatures.SIGNATURE).exists()


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
    assert signatures.public_key(signing_key()).decode().startswith(public)  # the block's key signs from now on


def test_a_machine_given_no_key_makes_its_own_once_and_trusts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLC_FARM_SIGNING_KEY")
    made = signing_key()
    path = tmp_path / "cache" / "signing" / "private.pem"  # MLC_FARM_CACHE of the test
    assert path.read_bytes() == made and path.stat().st_mode & 0o777 == 0o600
    assert signing_key() == made and trusted_keys() == [signatures.public_key(made)]
    assert [p.name for p in path.parent.iterdir()] == ["private.pem"]
    monkeypatch.setenv("MLC_FARM_TRUSTED_KEYS", str(tmp_path / "missing.pub"))
    with pytest.raises(BadInput, match=r"MLC_FARM_TRUSTED_KEYS: .*missing\.pub"):
        trusted_keys()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_store_from_before_signatures_is_signed_by_its_next_nightly(tiny_models: Path, tmp_path: Path) -> None:
    store, matrix = built_store(tiny_models, tmp_path, ONE_CELL.replace("publish: {org: farm-org}\n", ""))
    shutil.rmtree(store / "signatures")  # as a store written before signatures has it
    out = tmp_path / "out"
    assert run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(out), "--store", str(store)).returncode == 1
    again = cli("build", "--matrix", str(matrix), "--store", str(store))
    assert again.returncode == 0 and "0 builds to run" in again.stdout, again.stdout + again.stderr
    pulled = run_cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(out), "--store", str(store))
    assert pulled.returncode == 0, pulled.stderr
    assert signatures.verify_folder(out, trusted_keys())
