"""The ArtifactStore contract, run against every backend: the local directory and S3 (a real SeaweedFS).
What a backend must do is written once here; what only one backend has (multipart checksums, conditional
PUTs, the tmp/ directory) stays in test_local_store.py and test_s3_store.py."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from mlc_farm.errors import CorruptBlobError, DamagedDocumentError
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.store.layout import blob_path
from tests.helpers import s3_client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    url = request.getfixturevalue("s3_store_url") if request.param == "s3" else str(tmp_path / "store")
    return open_store(url)


def overwrite(store: ArtifactStore, name: str, data: bytes) -> None:
    """Change an object behind the store's back (a flipped bit on disk, a bad upload, another tool)."""
    if store.url.startswith("s3://"):
        bucket, prefix = store.url.removeprefix("s3://").split("/", 1)
        s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    else:
        path = Path(store.url.removeprefix("file://")) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_blob_round_trip_dedup_and_progress(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 10_000_000)
    digest = sha(src.read_bytes())
    sent: list[int] = []
    assert store.put_blob(src, digest, sent.append) is True
    assert sum(sent) == 10_000_000 and len(sent) > 1  # progress as it goes
    assert store.put_blob(src, digest, sent.append) is False  # already there: not sent again
    assert sum(sent) == 20_000_000  # ... and reported done at once
    assert store.has_blob(digest) and store.check_blob(digest) is None
    landed: list[int] = []
    store.get_blob(digest, tmp_path / "out" / "f.bin", landed.append)
    assert (tmp_path / "out" / "f.bin").read_bytes() == src.read_bytes() and sum(landed) == 10_000_000


def test_a_corrupt_blob_is_found_never_left_on_disk_and_replaced_by_the_next_put(
    store: ArtifactStore, tmp_path: Path
) -> None:
    src = tmp_path / "f.bin"
    src.write_bytes(b"good bytes" * 10_000)
    digest = sha(src.read_bytes())
    store.put_blob(src, digest)
    overwrite(store, blob_path(digest), b"evil bytes" * 10_000)
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(CorruptBlobError, match="is corrupt"):
        store.get_blob(digest, dest)
    assert list((tmp_path / "out").iterdir()) == []
    assert (store.check_blob(digest) or "").startswith("corrupt")
    assert store.put_blob(src, digest) is True  # the stored object does not hold these bytes: replaced
    assert store.check_blob(digest) is None


def test_concurrent_updates_keep_every_writer(store: ArtifactStore) -> None:
    def add(i: int) -> None:
        for j in range(10):
            store.update_json("catalog/x.json", lambda old, k=f"{i}-{j}": {**(old or {}), k: True})

    threads = [threading.Thread(target=add, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store.read_json("catalog/x.json") or {}) == 30


def test_a_damaged_document_is_said_so_and_only_replaced_when_allowed(store: ArtifactStore) -> None:
    overwrite(store, "catalog/m/q.json", b'{"schema_version": 2, "mod')
    with pytest.raises(DamagedDocumentError, match=r"catalog/m/q\.json is damaged"):
        store.read_json("catalog/m/q.json")
    with pytest.raises(DamagedDocumentError):
        store.update_json("catalog/m/q.json", lambda old: {"new": True}, replace_damaged=False)
    with pytest.raises(DamagedDocumentError):
        store.read_json("catalog/m/q.json")  # untouched
    assert store.update_json("catalog/m/q.json", lambda old: {"was": old}) == {"was": None}  # a lease's way


def test_listing_and_deleting(store: ArtifactStore) -> None:
    store.write_json("builds/a.json", {"a": 1})
    store.write_text("index.html", "<p>page</p>", "text/html")
    listed = {name: size for name, size, _ in store.list_with_info("builds/")}
    assert listed == {"builds/a.json": len('{\n  "a": 1\n}')}
    assert list(store.names("builds/")) == ["builds/a.json"]
    store.delete("builds/a.json")
    assert list(store.names("builds/")) == [] and store.read_json("builds/a.json") is None
    store.delete("builds/a.json")  # deleting what is not there is not an error
