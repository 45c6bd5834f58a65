"""Reading the store's records and catalog entries, as untrusted input (mlc_farm/store/documents.py): one
that does not parse or validate is treated as missing, so its build runs again and its catalog entry is
rewritten instead of the farm failing on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlc_farm.checks import fidelity
from mlc_farm.checks.validate import DISTRIBUTIONS_FILE, REFERENCE_FILE
from mlc_farm.errors import NotFound
from mlc_farm.records.schema import RECORD, BuildRecord, CatalogEntry, CheckRecord, FailureRecord, FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.documents import parse_document, read_all, read_document
from mlc_farm.store.layout import BUILDS, CATALOG, FAILURES, blob_path, catalog_path, failure_path, record_path


def load_record(store: ArtifactStore, key: str) -> BuildRecord | None:
    return read_document(store, record_path(key), RECORD)


def all_records(
    store: ArtifactStore, known: Mapping[str, BuildRecord] | None = None
) -> Iterator[tuple[str, BuildRecord]]:
    """(store name, record) of every readable build record in the store; those of `known` (by key: records the
    caller read already) are not read again."""
    known = known or {}
    names = list(store.names(BUILDS))
    have = {record_path(key): record for key, record in known.items()}
    read = dict(read_all(store, [n for n in names if n not in have], RECORD))
    for name in names:
        if (record := have.get(name) or read.get(name)) is not None:
            yield name, record


def load_failure(store: ArtifactStore, key: str) -> FailureRecord | None:
    return read_document(store, failure_path(key), FailureRecord)


def all_failures(store: ArtifactStore) -> Iterator[tuple[str, FailureRecord]]:
    """(store name, record) of every readable failure record in the store."""
    return read_all(store, store.names(FAILURES), FailureRecord)


def read_entry(store: ArtifactStore, model: str, quantization: str) -> CatalogEntry | None:
    return read_document(store, catalog_path(model, quantization), CatalogEntry)


def entries(store: ArtifactStore, known: Iterable[CatalogEntry] = ()) -> list[CatalogEntry]:
    """Every readable catalog entry (one JSON file per model x quantization), in the store's order; `known`: entries
    the caller read (and checked) already, not read again."""
    have = {catalog_path(e.model, e.quantization): e for e in known}
    names = [n for n in store.names(CATALOG) if n.endswith(".json")]
    read = dict(read_all(store, (n for n in names if n not in have), CatalogEntry))
    return [e for n in names if (e := have.get(n) or read.get(n)) is not None]


def get_entry(store: ArtifactStore, model: str, quantization: str) -> CatalogEntry:
    entry = read_entry(store, model, quantization)
    if entry is None:
        known = sorted(f"{e.model} {e.quantization}" for e in entries(store))
        raise NotFound(
            f"{store.url} has no build of {model} {quantization}"
            + (f"; it has: {', '.join(known)}" if known else "; the catalog is empty")
        )
    return entry


def read_blob_json(store: ArtifactStore, file: FileEntry) -> dict[str, Any]:
    """A small JSON output (tensor-cache.json, mlc-chat-config.json), fetched and verified."""
    with tempfile.TemporaryDirectory(prefix="mlc-farm-doc-") as tmp:
        path = Path(tmp) / "doc.json"
        store.get_blob(file.sha256, path, size=file.size)
        return parse_document(f"{store.url}/{blob_path(file.sha256)} ({file.path})", path.read_bytes())


def reference_distributions(store: ArtifactStore, key: str) -> fidelity.Distributions | str:
    """The distributions of a reference build, or of a check whose library pass is the reference; a string:
    why there are none (a reference library that did not run where it was checked)."""
    record = load_record(store, key)
    if record is None:
        return f"its reference {key[:12]} has no build record"
    name = REFERENCE_FILE if record.kind == "reference" else DISTRIBUTIONS_FILE
    if not any(f.path == name for f in record.files):
        found = record.fidelity if isinstance(record, CheckRecord) else None
        return f"its reference ({found.describe() if found else key[:12]}) has no distributions"
    return fidelity.Distributions.model_validate(read_blob_json(store, next(f for f in record.files if f.path == name)))
