"""Build records and the catalog: what the store says was built, and the checks that it is whole.

Layout (like an OCI registry): `blobs/sha256/<hex>` immutable files; `builds/<key>.json` one record per
build listing its files by sha256; `catalog/<model>/<quant>.json` pointing at the current weights and
each device's library. Written in that order, so a reader never follows a pointer to nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel


class FileEntry(BaseModel):
    path: str
    size: int
    sha256: str


class BuildRecord(BaseModel):
    key: str
    kind: Literal["weights", "library"]
    files: list[FileEntry]
    inputs: dict[str, Any]
    toolchain: dict[str, Any]
    started_at: datetime
    finished_at: datetime
    seconds: dict[str, float]
    log: FileEntry | None = None
    flow_run: str | None = None
    host: str | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class LibRef(BaseModel):
    key: str
    file: FileEntry
    target: str


class CatalogEntry(BaseModel):
    model: str
    quantization: str
    source: dict[str, Any]
    weights: str
    libs: dict[str, LibRef]
    updated_at: datetime


def record_path(key: str) -> str:
    return f"builds/{key}.json"


def catalog_path(model: str, quantization: str) -> str:
    return f"catalog/{model}/{quantization}.json"


def blob_path(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def referenced_blobs(record: BuildRecord) -> list[FileEntry]:
    return [*record.files, *([record.log] if record.log else [])]
