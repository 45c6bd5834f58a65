"""The ArtifactStore contract: what every backend must do, written once in `StoreContract`; each backend's
class below subclasses it, giving its store and the hooks for what only it can do to itself (change an
object behind the store's back, leave an upload a killed process did not finish). What only one backend has
(multipart checksums, conditional PUTs, the tmp/ directory) stays in test_local_store.py and test_s3_store.py.
A new backend is a subclass here."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlc_farm.errors import CorruptBlobError, DamagedDocumentError, MissingObject
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.store.layout import blob_path
from tests.helpers import s3_client


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StoreContract:
    """The tests every backend passes; a subclass gives `store` and the hooks."""

    honours_keep = True  # abort_stale_uploads spares the uploads of the blobs in `keep`

    @pytest.fixture
    def store(self, tmp_path: Path) -> ArtifactStore:
        raise NotImplementedError

    def overwrite(self, store: ArtifactStore, name: str, data: bytes) -> None:
        """Change an object behind the store's back (a flipped bit on disk, a bad upload, another tool)."""
        raise NotImplementedError

    def leave_upload(self, store: ArtifactStore, sha256: str) -> None:
        """An upload of the blob `sha256` begun now by a process that died before finishing it."""
        raise NotImplementedError

    def test_blob_round_trip_dedup_and_progress(self, store: ArtifactStore, tmp_path: Path) -> None:
        src = tmp_path / "f.bin"
        src.write_bytes(b"x" * 20_000_000)
        digest = sha(src.read_bytes())
        sent: list[int] = []
        assert store.put_blob(src, digest, sent.append) is True
        assert sum(sent) == 20_000_000 and len(sent) > 1  # progress as it goes (S3: part by part)
        assert store.put_blob(src, digest, sent.append) is False  # already there: not sent again
        assert sum(sent) == 40_000_000  # ... and reported done at once
        assert store.has_blob(digest) and store.check_blob(digest) is None
        landed: list[int] = []
        store.get_blob(digest, tmp_path / "out" / "f.bin", landed.append)
        assert (tmp_path / "out" / "f.bin").read_bytes() == src.read_bytes() and sum(landed) == 20_000_000

    def test_a_corrupt_blob_is_found_never_left_on_disk_and_replaced_by_the_next_put(
        self, store: ArtifactStore, tmp_path: Path
    ) -> None:
        src = tmp_path / "f.bin"
        src.write_bytes(b"good bytes" * 10_000)
        digest = sha(src.read_bytes())
        store.put_blob(src, digest)
        self.overwrite(store, blob_path(digest), b"evil bytes" * 10_000)
        dest = tmp_path / "out" / "f.bin"
        with pytest.raises(CorruptBlobError, match="is corrupt"):
            store.get_blob(digest, dest)
        assert list((tmp_path / "out").iterdir()) == []
        assert (store.check_blob(digest) or "").startswith("corrupt")
        assert store.put_blob(src, digest) is True  # the stored object does not hold these bytes: replaced
        assert store.check_blob(digest) is None

    def test_concurrent_updates_keep_every_writer(self, store: ArtifactStore) -> None:
        def add(i: int) -> None:
            for j in range(10):
                store.update_json("catalog/x.json", lambda old, k=f"{i}-{j}": {**(old or {}), k: True})

        threads = [threading.Thread(target=add, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.read_json("catalog/x.json") or {}) == 30

    def test_a_damaged_document_is_said_so_and_only_replaced_when_allowed(self, store: ArtifactStore) -> None:
        self.overwrite(store, "catalog/m/q.json", b'{"schema_version": 2, "mod')
        with pytest.raises(DamagedDocumentError, match=r"catalog/m/q\.json is damaged"):
            store.read_json("catalog/m/q.json")
        with pytest.raises(DamagedDocumentError):
            store.update_json("catalog/m/q.json", lambda old: {"new": True}, replace_damaged=False)
        with pytest.raises(DamagedDocumentError):
            store.read_json("catalog/m/q.json")  # untouched
        assert store.update_json("catalog/m/q.json", lambda old: {"was": old}) == {"was": None}  # a lease's way

    def test_listing_and_deleting(self, store: ArtifactStore) -> None:
        store.write_json("builds/a.json", {"a": 1})
        store.write_text("index.html", "<p>page</p>", "text/html")
        listed = {name: size for name, size, _ in store.list_with_info("builds/")}
        assert listed == {"builds/a.json": len('{\n  "a": 1\n}')}
        assert list(store.names("builds/")) == ["builds/a.json"]
        store.delete("builds/a.json")
        assert list(store.names("builds/")) == [] and store.read_json("builds/a.json") is None
        store.delete("builds/a.json")  # deleting what is not there is not an error

    def test_a_missing_blob_is_missing_everywhere_and_leaves_nothing_on_disk(
        self, store: ArtifactStore, tmp_path: Path
    ) -> None:
        digest = sha(b"never stored")
        assert not store.has_blob(digest) and store.check_blob(digest) == "missing"
        with pytest.raises(MissingObject, match=digest[:12]):
            store.get_blob(digest, tmp_path / "out" / "f.bin")
        assert list((tmp_path / "out").iterdir()) == []
        assert store.read_json("builds/none.json") is None

    def test_an_unfinished_upload_is_stale_only_once_old_and_never_when_kept(self, store: ArtifactStore) -> None:
        dead, kept = sha(b"a dead run's blob"), sha(b"a live build's blob")
        self.leave_upload(store, dead)
        self.leave_upload(store, kept)
        now, quiet = datetime.now(timezone.utc), timedelta(hours=48)
        assert store.abort_stale_uploads(quiet, now=now + timedelta(hours=1)) == []  # begun an hour ago: live
        later = now + timedelta(hours=49)
        found = store.abort_stale_uploads(quiet, dry_run=True, keep={kept}, now=later)
        assert len(found) == (1 if self.honours_keep else 2)
        assert store.abort_stale_uploads(quiet, keep={kept}, now=later) == found
        assert store.abort_stale_uploads(quiet, keep={kept}, now=later) == []  # gone

    def test_listing_gives_sizes_and_times_on_the_stores_clock(self, store: ArtifactStore) -> None:
        before = datetime.now(timezone.utc) - timedelta(minutes=5)
        store.write_text("pages/a.html", "<p>a</p>", "text/html")
        [(name, size, when)] = list(store.list_with_info("pages/"))
        assert (name, size) == ("pages/a.html", len("<p>a</p>"))
        assert when.tzinfo is not None and before < when < datetime.now(timezone.utc) + timedelta(minutes=5)


class TestLocalStore(StoreContract):
    honours_keep = False  # its uploads are temporary files named by process, not by blob: a live one is spared

    @pytest.fixture
    def store(self, tmp_path: Path) -> ArtifactStore:
        return open_store(str(tmp_path / "store"))

    def overwrite(self, store: ArtifactStore, name: str, data: bytes) -> None:
        path = Path(store.url.removeprefix("file://")) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def leave_upload(self, store: ArtifactStore, sha256: str) -> None:
        """Another machine's temporary file (this machine's are judged by their process, alive or not)."""
        tmp = Path(store.url.removeprefix("file://")) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / f"other-host-{sha256[:8]}-{os.getpid()}-part").write_bytes(b"half")


class TestS3Store(StoreContract):
    @pytest.fixture
    def store(self, s3_store_url: str) -> ArtifactStore:
        return open_store(s3_store_url)

    def overwrite(self, store: ArtifactStore, name: str, data: bytes) -> None:
        bucket, prefix = store.url.removeprefix("s3://").split("/", 1)
        s3_client().put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)

    def leave_upload(self, store: ArtifactStore, sha256: str) -> None:
        bucket, prefix = store.url.removeprefix("s3://").split("/", 1)
        s3_client().create_multipart_upload(Bucket=bucket, Key=f"{prefix}/{blob_path(sha256)}")
