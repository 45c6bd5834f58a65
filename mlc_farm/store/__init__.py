"""Artifact stores: one protocol, a local directory (the embedded default) and S3, chosen by URL."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

DEFAULT_STORE = "file://./artifacts"


class StoreError(RuntimeError):
    """The store cannot do what was asked (missing object, no permission): not worth a retry."""


class CorruptBlobError(StoreError):
    """A blob whose bytes do not match its sha256."""


class DamagedDocumentError(StoreError):
    """A store JSON document that does not parse: readers treat it as missing, so the next build rewrites it."""


def parse_document(where: str, raw: bytes | str) -> dict[str, Any]:
    """A store document's JSON, or DamagedDocumentError naming the object (truncated, not UTF-8, not an object)."""
    try:
        data = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise DamagedDocumentError(f"{where} is damaged ({e})") from None
    if not isinstance(data, dict):
        raise DamagedDocumentError(f"{where} is damaged (a JSON {type(data).__name__}, not an object)")
    return data


class ArtifactStore(Protocol):
    url: str

    def has_blob(self, sha256: str) -> bool: ...

    def put_blob(self, path: Path, sha256: str) -> bool:
        """Store `path` as the blob `sha256` unless it is there already; True if it was sent."""
        ...

    def get_blob(self, sha256: str, dest: Path) -> None:
        """Write the blob to `dest`, verified; nothing is left at `dest` if it does not match."""
        ...

    def read_json(self, name: str) -> dict[str, Any] | None: ...

    def write_json(self, name: str, data: dict[str, Any]) -> None: ...

    def update_json(self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        """Read-modify-write without losing a concurrent writer's update."""
        ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def list_with_info(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        """(name, size, last modified) of every object under `prefix`."""
        ...

    def delete(self, name: str) -> None: ...

    def abort_stale_uploads(self, older_than: timedelta, dry_run: bool = False) -> list[str]:
        """Drop uploads that a killed process left unfinished (never visible to readers); their names."""
        ...


def open_store(url: str | None = None) -> ArtifactStore:
    """The store at `url`, else MLC_FARM_STORE, else ./artifacts; a plain path means a local directory."""
    url = url or os.environ.get("MLC_FARM_STORE") or DEFAULT_STORE
    if url.startswith("s3://"):
        from mlc_farm.store.s3 import S3Store

        return S3Store(url)
    from mlc_farm.store.local import LocalStore

    return LocalStore(Path(url.removeprefix("file://")))
