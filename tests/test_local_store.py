"""The local store: content-addressed blobs, atomic JSON, verified reads, concurrent catalog updates."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from mlc_farm.errors import CorruptBlobError
from mlc_farm.store import open_store
from mlc_farm.store.layout import blob_path
from mlc_farm.store.local import LocalStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_blob_round_trip_and_dedup(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 10_000_000)
    digest = sha(src.read_bytes())
    sent: list[int] = []
    assert store.put_blob(src, digest, sent.append) is True
    assert sum(sent) == 10_000_000 and len(sent) > 1  # progress as it goes
    assert store.put_blob(src, digest, sent.append) is False  # already there: not written again
    assert sum(sent) == 20_000_000  # ... and reported done at once
    landed: list[int] = []
    store.get_blob(digest, tmp_path / "out" / "f.bin", landed.append)
    assert (tmp_path / "out" / "f.bin").read_bytes() == src.read_bytes() and sum(landed) == 10_000_000
    assert list((tmp_path / "s" / "tmp").glob("*")) == []


def test_put_refuses_a_file_that_does_not_match_its_digest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"abc")
    with pytest.raises(CorruptBlobError):
        store.put_blob(src, sha(b"abd"))
    assert not store.has_blob(sha(b"abd"))


def test_corrupt_blob_is_detected_and_not_left_on_disk(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    src = tmp_path / "f.bin"
    src.write_bytes(b"good bytes")
    digest = sha(b"good bytes")
    store.put_blob(src, digest)
    (tmp_path / "s" / blob_path(digest)).write_bytes(b"evil bytes")
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(CorruptBlobError, match="is corrupt"):
        store.get_blob(digest, dest)
    assert list((tmp_path / "out").iterdir()) == []


def test_concurrent_updates_keep_every_writer(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")

    def add(i: int) -> None:
        for j in range(20):
            store.update_json("catalog/x.json", lambda old, k=f"{i}-{j}": {**(old or {}), k: True})

    threads = [threading.Thread(target=add, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.read_json("catalog/x.json") or {}) == 80


def test_open_store_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_store(f"file://{tmp_path}/a").url == f"file://{tmp_path}/a"
    assert open_store(str(tmp_path / "b")).url == f"file://{tmp_path}/b"
    monkeypatch.setenv("MLC_FARM_STORE", str(tmp_path / "c"))
    assert open_store().url == f"file://{tmp_path}/c"
