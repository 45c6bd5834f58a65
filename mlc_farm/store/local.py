"""The local-directory store: the embedded default, same layout and write order as S3.

Every write goes to `tmp/` first and is renamed into place, so a killed build leaves at most a stray
temporary file that no record points at.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from mlc_farm.errors import BadInput, CorruptBlobError, DamagedDocumentError, MissingObject, StoreError
from mlc_farm.processes import process_alive
from mlc_farm.settings import load_settings
from mlc_farm.store.documents import parse_document
from mlc_farm.store.layout import blob_path

_CHUNK = 8 << 20
_HOST = socket.gethostname().replace("/", "_")


class LocalStore:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.url = f"file://{self.root}"

    def ping(self) -> None:
        """A directory is always there to ask (whether it exists is `check_writable`'s or a reader's question)."""

    def presigned_url(self, name: str, expires: int) -> str:
        raise StoreError(f"{self.url}: presigned URLs need an S3 store (s3://bucket/prefix)")

    def check_writable(self) -> None:
        """Before a build spends anything: the store's directory exists or can be made, and takes a file."""
        if self.root.exists() and not self.root.is_dir():
            raise BadInput(f"store {self.root} is a file, not a directory: give a directory (or s3://bucket/prefix)")
        try:
            os.unlink(self._tmp())
        except OSError as e:
            raise BadInput(
                f"store {self.root} cannot be written ({e.strerror}): check --store / MLC_FARM_STORE"
            ) from None

    def _tmp(self) -> Path:
        """A new temporary file, with the permissions the umask gives (mkstemp's 0600 would hide blobs from the
        other users of a shared store)."""
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        path = self.root / "tmp" / f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex}"
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        return path

    def _publish(self, tmp: Path, name: str) -> None:
        dest = self.root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)

    def has_blob(self, sha256: str) -> bool:
        return (self.root / blob_path(sha256)).is_file()

    def put_blob(self, path: Path, sha256: str, progress: Callable[[int], None] | None = None) -> bool:
        stored = self.root / blob_path(sha256)
        if stored.is_file() and stored.stat().st_size == path.stat().st_size and self.check_blob(sha256) is None:
            if progress:
                progress(stored.stat().st_size)
            return False
        tmp = self._tmp()
        try:
            got = _copy_hashed(path, tmp, progress)
            if got != sha256:
                raise CorruptBlobError(f"{path} changed while being stored (sha256 {got})")
            self._publish(tmp, blob_path(sha256))
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def check_blob(self, sha256: str, progress: Callable[[int], None] | None = None) -> str | None:
        h = hashlib.sha256()
        try:
            with (self.root / blob_path(sha256)).open("rb") as f:
                while block := f.read(_CHUNK):
                    h.update(block)
                    if progress:
                        progress(len(block))
        except FileNotFoundError:
            return "missing"
        return None if h.hexdigest() == sha256 else f"corrupt (its content hashes to {h.hexdigest()})"

    def get_blob(self, sha256: str, dest: Path, progress: Callable[[int], None] | None = None) -> None:
        src = self.root / blob_path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        try:
            try:
                got = _copy_hashed(src, part, progress)
            except FileNotFoundError:
                if src.exists():  # what went missing is the destination's directory, not the blob
                    raise
                raise MissingObject(f"{self.url}/{blob_path(sha256)} is missing") from None
            if got != sha256:
                raise CorruptBlobError(f"{self.url}/{blob_path(sha256)} is corrupt (sha256 {got})")
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)

    def read_json(self, name: str) -> dict[str, Any] | None:
        try:
            raw = (self.root / name).read_bytes()
        except FileNotFoundError:
            return None
        return parse_document(f"{self.url}/{name}", raw)

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        self.write_text(name, json.dumps(data, indent=2, sort_keys=True, default=str), "application/json")

    def write_text(self, name: str, text: str, content_type: str) -> None:
        tmp = self._tmp()
        tmp.write_text(text, encoding="utf-8")
        self._publish(tmp, name)

    def update_json(
        self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any]], replace_damaged: bool = True
    ) -> dict[str, Any]:
        with self._locked(name):
            try:
                current = self.read_json(name)
            except DamagedDocumentError:
                if not replace_damaged:
                    raise
                current = None  # rewritten whole by this update
            data = change(current)
            self.write_json(name, data)
            return data

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        lock = self.root / "tmp" / (name.replace("/", "_") + ".lock")
        with lock.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def names(self, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if base.is_dir():
            for p in sorted(base.rglob("*")):
                if p.is_file():
                    yield p.relative_to(self.root).as_posix()

    def list_with_info(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        for name in self.names(prefix):
            st = (self.root / name).stat()
            yield name, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc)

    def close(self) -> None:
        """Nothing held between calls."""

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def abort_stale_uploads(
        self, older_than: timedelta, dry_run: bool = False, keep: Collection[str] = (), now: datetime | None = None
    ) -> list[str]:
        """Temporary files that belong to no live process, the local twin of abandoned multipart uploads: of
        this machine, those whose process is gone; of another machine sharing the store, those untouched for
        `older_than` and for MLC_FARM_STALE_UPLOAD_HOURS (a live writer keeps touching its file). Nothing a
        live process of this machine holds is removed, whatever `older_than` says."""
        quiet = max(older_than.total_seconds(), load_settings().stale_upload_hours * 3600)
        clock = now.timestamp() if now else time.time()
        stale: list[str] = []
        if not (self.root / "tmp").is_dir():
            return stale
        for p in (self.root / "tmp").iterdir():
            host, _, rest = p.name.rpartition("-")[0].rpartition("-")
            if p.suffix == ".lock" or not rest.isdigit():
                continue
            ours = host == _HOST
            with contextlib.suppress(FileNotFoundError):
                if (not process_alive(int(rest))) if ours else p.stat().st_mtime <= clock - quiet:
                    stale.append(f"tmp/{p.name}")
                    if not dry_run:
                        p.unlink(missing_ok=True)
        return stale


def _copy_hashed(src: Path, dest: Path, progress: Callable[[int], None] | None = None) -> str:
    """Copy in one pass, returning the sha256 of what was read."""
    h = hashlib.sha256()
    with src.open("rb") as f, dest.open("wb") as out:
        while block := f.read(_CHUNK):
            h.update(block)
            out.write(block)
            if progress:
                progress(len(block))
    return h.hexdigest()
