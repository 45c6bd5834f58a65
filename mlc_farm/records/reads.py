"""Reading the store's documents as untrusted input: a document that does not parse or validate (truncated by a
crash, or written by an older farm) is reported and treated as missing, so its build runs again and its
catalog entry is rewritten instead of the farm failing on it; a name in it that would be a path elsewhere is a
tampered store, refused.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlc_farm.errors import DamagedDocumentError, NotFound, UnsafeStoreName
from mlc_farm.names import UNSAFE
from mlc_farm.records.schema import SCHEMA_VERSION, BuildRecord, CatalogEntry, FailureRecord, FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import BUILDS, CATALOG, FAILURES, catalog_path, failure_path, record_path

log = logging.getLogger(__name__)


M = TypeVar("M", bound=BaseModel)


def read_document(store: ArtifactStore, name: str, model: type[M]) -> M | None:
    """A store document as `model`, or None when it is missing or damaged (reported, never raised). A name in
    it that breaks the path rule (mlc_farm/names.py) is not damage but a tampered store: UnsafeStoreName."""
    try:
        data = store.read_json(name)
        return model.model_validate(data) if data is not None else None
    except DamagedDocumentError as e:
        log.warning("%s; treated as missing, the next build rewrites it", e)
    except ValidationError as e:
        if unsafe := [p for p in e.errors() if p["type"] == UNSAFE]:
            where = ".".join(str(part) for part in unsafe[0]["loc"])
            raise UnsafeStoreName(
                f"{store.url}/{name}: {where}: {unsafe[0]['msg']}: refused, nothing was written (whoever can write "
                "to the store wrote a name that would be a path elsewhere; repair or delete the document)"
            ) from None
        log.warning(
            "%s/%s is not a schema %d document (%s); treated as missing, the next build rewrites it",
            store.url, name, SCHEMA_VERSION, first_problem(e),
        )  # fmt: skip
    return None


def first_problem(e: ValidationError) -> str:
    """`field.path: what is wrong` of the first error of a document that does not validate."""
    first = e.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or 'document'}: {first['msg']}"


def load_record(store: ArtifactStore, key: str) -> BuildRecord | None:
    return read_document(store, record_path(key), BuildRecord)


READERS = 16  # store documents read at once: on S3 each is a GET, so a catalog of thousands reads in seconds


def read_all(store: ArtifactStore, names: Iterable[str], model: type[M]) -> Iterator[tuple[str, M]]:
    """(name, document) of every readable one of `names`, READERS at a time, in order."""
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        for name, doc in zip(
            names := list(names), pool.map(lambda n: read_document(store, n, model), names), strict=True
        ):
            if doc is not None:
                yield name, doc


def all_records(store: ArtifactStore) -> Iterator[tuple[str, BuildRecord]]:
    """(store name, record) of every readable build record in the store."""
    return read_all(store, store.names(BUILDS), BuildRecord)


def load_failure(store: ArtifactStore, key: str) -> FailureRecord | None:
    return read_document(store, failure_path(key), FailureRecord)


def all_failures(store: ArtifactStore) -> Iterator[tuple[str, FailureRecord]]:
    """(store name, record) of every readable failure record in the store."""
    return read_all(store, store.names(FAILURES), FailureRecord)


def read_entry(store: ArtifactStore, model: str, quantization: str) -> CatalogEntry | None:
    return read_document(store, catalog_path(model, quantization), CatalogEntry)


def entries(store: ArtifactStore) -> list[CatalogEntry]:
    """Every readable catalog entry (one JSON file per model x quantization)."""
    return [e for _, e in read_all(store, (n for n in store.names(CATALOG) if n.endswith(".json")), CatalogEntry)]


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
        store.get_blob(file.sha256, path)
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
