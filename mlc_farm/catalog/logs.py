"""`mlc-farm log`: which build logs a person means by a key or a cell, from the records in the store."""

from __future__ import annotations

import re

from pydantic import BaseModel

from mlc_farm.errors import BadInput, NotFound
from mlc_farm.names import shorten
from mlc_farm.records.reads import all_failures, load_failure, load_record, read_entry
from mlc_farm.records.schema import FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import BUILDS, FAILURES

_KEY_PREFIX = re.compile(r"^[0-9a-f]{6,64}\Z")


class FoundLog(BaseModel):
    """One log to show, with the line that says whose it is."""

    header: str
    log: FileEntry | None


def _keys(store: ArtifactStore, prefix: str) -> list[str]:
    names = (
        name.rsplit("/", 1)[-1].removesuffix(".json") for folder in (BUILDS, FAILURES) for name in store.names(folder)
    )
    return sorted({key for key in names if key.startswith(prefix)})


def _of_key(store: ArtifactStore, key: str, label: str) -> FoundLog | None:
    """The key's build log; else the log of its last failure (a failure record goes once the key builds)."""
    if record := load_record(store, key):
        return FoundLog(header=f"{label} {key[:12]}: built {record.finished_at:%Y-%m-%d %H:%M:%S} UTC", log=record.log)
    if failure := load_failure(store, key):
        when = f"{failure.failed_at:%Y-%m-%d %H:%M:%S} UTC"
        return FoundLog(header=f"{failure.label} {key[:12]}: FAILED {when}: {failure.error}", log=failure.log)
    return None


def by_key(store: ArtifactStore, prefix: str) -> FoundLog:
    if not _KEY_PREFIX.match(prefix):
        raise BadInput(
            f"KEY {shorten(prefix)}: a build key is hex (at least its first 6 characters), as `plan` prints it"
        )
    keys = _keys(store, prefix)
    if not keys:
        raise NotFound(f"no build or failure with a key starting {prefix} in {store.url}")
    if len(keys) > 1:
        raise BadInput(f"KEY {prefix} is ambiguous in {store.url}: {', '.join(k[:12] for k in keys[:5])}; give more")
    found = _of_key(store, keys[0], "build")
    if found is None:  # listed, but damaged: reported by the reader
        raise BadInput(f"the records of {keys[0][:12]} in {store.url} cannot be read")
    return found


def by_cell(store: ArtifactStore, model: str, quantization: str, device: str | None) -> list[FoundLog]:
    """The failures of the cell that have not built since (newest first), then the logs of the builds its
    catalog entry serves: weights, config, and the device's library (or every device's)."""
    failures = sorted(
        (
            f
            for _, f in all_failures(store)
            if f.about(model, quantization, device) and load_record(store, f.key) is None
        ),
        key=lambda f: f.failed_at,
        reverse=True,
    )
    found = [
        FoundLog(header=f"{f.label} {f.key[:12]}: FAILED {f.failed_at:%Y-%m-%d %H:%M:%S} UTC: {f.error}", log=f.log)
        for f in failures
    ]
    if entry := read_entry(store, model, quantization):
        builds = [("convert", entry.convert), ("config", entry.config)]
        builds += [(f"library {d}", ref.key) for d, ref in sorted(entry.libs.items()) if device in (None, d)]
        found += [log for label, key in builds if (log := _of_key(store, key, f"{label} {model}/{quantization}"))]
    if not found:
        cell = " ".join(x for x in (model, quantization, device) if x)
        raise NotFound(f"no build or failure of {cell} in {store.url} (`mlc-farm ls` lists what is there)")
    return found
