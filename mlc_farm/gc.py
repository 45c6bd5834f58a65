"""Garbage collection: blobs no build record points at, and uploads that killed runs left behind.

Only what is older than `min_age` goes: a build still running has uploaded blobs its record does not
list yet, and must not lose them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import BaseModel

from mlc_farm.catalog import all_records, referenced_blobs
from mlc_farm.store import ArtifactStore


class GcReport(BaseModel):
    blobs: list[str]
    bytes: int
    uploads: list[str]
    dry_run: bool


def collect(store: ArtifactStore, min_age: timedelta, dry_run: bool = False) -> GcReport:
    live = {f.sha256 for _, record in all_records(store) for f in referenced_blobs(record)}
    cutoff = datetime.now(timezone.utc) - min_age
    dead = [
        (name, size)
        for name, size, modified in store.list_with_info("blobs/sha256/")
        if name.rsplit("/", 1)[-1] not in live and modified <= cutoff
    ]
    if not dry_run:
        for name, _ in dead:
            store.delete(name)
    uploads = store.abort_stale_uploads(min_age, dry_run=dry_run)
    return GcReport(blobs=[n for n, _ in dead], bytes=sum(s for _, s in dead), uploads=uploads, dry_run=dry_run)
