"""Garbage collection: blobs no build record or failure record points at, and uploads that killed runs left
behind. The logs of failed builds stay (their failure records point at them) so that the links a failed run
printed keep working; a failure record goes once its key has built.

Safe beside running builds: gc holds its lease in the store while it collects and keeps every blob that a
live build lease names (builds name their blobs before they put or re-use any, then wait out a running gc:
see mlc_farm/store/lease.py), and the unfinished uploads of live builds stay. `min_age` keeps anything younger as
well (default 24 h).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from mlc_farm.output_dir import clean_noted
from mlc_farm.records.reads import all_failures, all_records
from mlc_farm.records.schema import referenced_blobs
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore, lease


class GcReport(BaseModel):
    blobs: list[str]
    bytes: int
    uploads: list[str]
    failures: list[str] = []  # failure records of keys that have built since
    staging: list[str] = []  # what killed pulls left beside their output directories
    dry_run: bool


def collect(store: ArtifactStore, min_age: timedelta, dry_run: bool = False) -> GcReport:
    with lease.collecting(store, load_settings().lease_seconds) as view:
        report = _collect(store, min_age, dry_run, view)
    return report.model_copy(update={"staging": [str(p) for p in clean_noted(dry_run)]})


def _collect(store: ArtifactStore, min_age: timedelta, dry_run: bool, view: lease.Collecting) -> GcReport:
    held = view.protected()  # first: a build that names its blobs after this waits for gc to end
    records = {record.key: record for _, record in all_records(store)}
    failures = list(all_failures(store))
    superseded = [name for name, failure in failures if failure.key in records]
    live = {f.sha256 for record in records.values() for f in referenced_blobs(record)}
    live |= {failure.log.sha256 for name, failure in failures if failure.log and name not in superseded}
    cutoff = view.now - min_age  # the store's time against the store's times: this machine's clock plays no part
    dead = [
        (name, size)
        for name, size, modified in store.list_with_info("blobs/sha256/")
        if (sha := name.rsplit("/", 1)[-1]) not in live and sha not in held and modified <= cutoff
    ]
    if not dry_run:
        for name in superseded:
            store.delete(name)
        for name, _ in dead:
            store.delete(name)
    uploads = store.abort_stale_uploads(min_age, dry_run=dry_run, keep=held, now=view.now)
    return GcReport(
        blobs=[n for n, _ in dead],
        bytes=sum(s for _, s in dead),
        uploads=uploads,
        failures=superseded,
        dry_run=dry_run,
    )
