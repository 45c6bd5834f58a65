"""What only the local store has (the contract of every store is test_store_contract.py): it checks the digest
it is given, and its temporary files are gone once a write is done."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlc_farm.errors import CorruptBlobError
from mlc_farm.store import open_store
from mlc_farm.store.local import LocalStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 10_000_000)
    digest = sha(src.read_bytes())
    store.put_blob(src, digest)
    store.get_blob(digest, tmp_path / "out" / "f.bin")
    store.write_json("catalog/x.json", {"a": 1})
    assert list((tmp_path / "s" / "tmp").glob("*")) == []


def test_put_refuses_a_file_that_does_not_match_its_digest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    with pytest.raises(CorruptBlobError):
        store.put_blob(src, sha(b"abd"))
    assert not store.has_blob(sha(b"abd"))


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_store(f"file://{tmp_path}/a").url == f"file://{tmp_path}/a"
    assert open_store(str(tmp_path / "b")).url == f"file://{tmp_path}/b"
    monkeypatch.setenv("MLC_FARM_STORE", str(tmp_path / "c"))
    assert open_store().url == f"file://{tmp_path}/c"
