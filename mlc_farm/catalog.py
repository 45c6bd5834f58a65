"""Build records and the catalog: what the store says was built, whether it was proven, and what is current.

A build record lists one build's files by sha256, with provenance and (for a library) its validation. A
catalog entry is one model x quantization: one convert build (weights), one config build (mlc-chat-config
and tokenizer) and a library per device. An entry only moves to a new set of builds when the set is complete
and validated (`next_entry`), so a bad nightly never replaces a good entry.

Every document carries `schema_version`. A document that does not parse or validate (truncated by a crash, or
written by an older farm) is reported and treated as missing: its build runs again and the catalog entry is
rewritten, instead of the farm failing on it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from mlc_farm.checks.fidelity import Fidelity
from mlc_farm.checks.memory import MemoryEstimate
from mlc_farm.checks.runtime import LibRuntime
from mlc_farm.checks.speed import Speed
from mlc_farm.errors import DamagedDocumentError, NotFound, UnsafeStoreName
from mlc_farm.jit import JitKey
from mlc_farm.names import UNSAFE, BuildKey, Name, RelPath, Sha256
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import BUILDS, CATALOG, FAILURES, catalog_path, failure_path, record_path

SCHEMA_VERSION: Literal[2] = 2
log = logging.getLogger("mlc_farm.catalog")
Kind = Literal["convert", "config", "library", "reference", "check"]


class FileEntry(BaseModel):
    """One output file. Its path becomes a path on a user's disk (pull, publish, install), so it is checked
    wherever a record is read (mlc_farm/names.py)."""

    path: RelPath
    size: int = Field(ge=0)
    sha256: Sha256


class FitCheck(BaseModel):
    """Does the library's metadata fit the weights and config it ships with (names, dtypes, shapes, options)."""

    status: Literal["passed", "failed", "not checked"]
    detail: str = ""


class RunCheck(BaseModel):
    """Did the library generate with real weights on its device: finite logits, decode speed, peak memory."""

    status: Literal["passed", "failed", "not run"]
    detail: str = ""
    device: str | None = None
    method: str | None = None  # how tokens_per_s was measured: a figure compares only with one of its method
    tokens_per_s: float | None = None  # decode through the VM: the median of the timed runs
    tokens_per_s_runs: list[float] | None = None  # each timed run's, the noise band of a later comparison
    speeds: list[Speed] = []  # every figure with its phase and method (decode, prefill, MLCEngine's)
    peak_memory_bytes: int | None = None
    ran_with: str | None = None


class Validation(BaseModel):
    fits: FitCheck
    run: RunCheck

    @property
    def ok(self) -> bool:
        return self.fits.status != "failed" and self.run.status != "failed"

    def describe(self) -> str:
        """One line for tables: what was checked and how it went, never more than was checked."""
        fits = {"passed": "fits", "failed": "does not fit", "not checked": "fit not checked"}[self.fits.status]
        if self.fits.status == "failed":
            fits += f" ({self.fits.detail})"
        r = self.run
        if r.status == "passed":
            speed = f", {r.tokens_per_s:.0f} tok/s" if r.tokens_per_s else ""
            run = f"ran on {r.device}{speed}"
        else:
            run = f"{r.status}: {r.detail}" if r.detail else r.status
        return f"{fits}; {run}"


class BuildRecord(BaseModel):
    schema_version: Literal[2] = SCHEMA_VERSION
    key: BuildKey
    kind: Kind
    files: list[FileEntry]
    inputs: dict[str, Any]
    toolchain: dict[str, Any]
    started_at: datetime
    finished_at: datetime
    seconds: dict[str, float]
    log: FileEntry | None = None
    flow_run: str | None = None
    host: str | None = None
    image: str | None = None  # the worker image it was built in (MLC_FARM_IMAGE, which the images set)
    # Libraries: what `vm["_metadata"]()` said, to check the fit of every model that shares the library.
    library_metadata: dict[str, Any] | None = None
    validation: Validation | None = None
    # CUDA libraries: the SM architectures of the images the library holds, read from it (mlc_farm/checks/device_code.py).
    cuda_archs: list[str] | None = None
    # Libraries: the model whose convert and config builds the validation used.
    validated_with: dict[str, str] | None = None
    # Checks: the cell's fidelity to its source (judged against the thresholds of the night it ran), and the
    # cell's names in the matrix (not in the key: the history of a cell follows them).
    fidelity: Fidelity | None = None
    cell: dict[str, Name] | None = None
    # Checks: the names mlc_llm's JIT cache gives the library with these weights' config, per device string.
    jit_keys: dict[str, JitKey] | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class FailedCell(BaseModel):
    """A matrix cell a failed build was for; `device` None for weights and config (every device of the cell)."""

    model: Name
    quantization: Name
    device: Name | None = None


class FailureRecord(BaseModel):
    """The last failure of a build key: what failed, the tool's own error and the log. It keeps the log alive
    (gc) so that the links a failed run printed still work, and goes once the key builds."""

    schema_version: Literal[2] = SCHEMA_VERSION
    key: BuildKey
    kind: Kind
    label: str
    cells: list[FailedCell]
    error: str
    log: FileEntry | None = None
    failed_at: datetime
    flow_run: str | None = None
    host: str | None = None

    def about(self, model: str, quantization: str, device: str | None) -> bool:
        """Whether this failure concerns the cell (model, quantization[, device])."""
        return any(
            c.model == model and c.quantization == quantization and (device is None or c.device in (None, device))
            for c in self.cells
        )


class LibRef(BaseModel):
    key: BuildKey
    file: FileEntry
    target: str
    host: str
    validation: Validation
    memory: MemoryEstimate | None = None  # with this entry's weights; None when the library has no metadata
    fidelity: Fidelity | None = None  # with this entry's weights, on the device (None: from before fidelity)
    check: BuildKey | None = None  # the check build that measured it
    runtime: LibRuntime | None = None  # what it was compiled with and needs (None: from before runtimes)
    jit_keys: dict[str, JitKey] = {}  # mlc_llm's JIT cache name per device string, with this entry's config


class CatalogEntry(BaseModel):
    schema_version: Literal[2] = SCHEMA_VERSION
    model: Name
    quantization: Name
    source: dict[str, Any]
    convert: BuildKey
    config: BuildKey
    libs: dict[Name, LibRef]
    # Planned devices with no validated library yet (only in an entry that had no complete predecessor).
    missing: list[Name] = []
    updated_at: datetime


def now() -> datetime:
    return datetime.now(timezone.utc)


def referenced_blobs(record: BuildRecord) -> list[FileEntry]:
    return [*record.files, *([record.log] if record.log else [])]


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


def next_entry(current: CatalogEntry | None, new: CatalogEntry, planned: set[str]) -> CatalogEntry | None:
    """What the catalog should hold after a run, or None to leave it as it is.

    - Same convert and config builds as now: add or replace the libraries that were built and validated, keep
      the others (a device that failed tonight keeps last night's library of the same weights).
    - New weights: move only when every planned device has a validated library, or when nothing better is
      being served (no entry yet, or one that covers no more devices). Otherwise the previous entry keeps
      serving: a nightly whose compiles all fail must not switch users to weights with no libraries.
    """
    if current and (current.convert, current.config) == (new.convert, new.config):
        libs = {**current.libs, **new.libs}
        merged = new.model_copy(update={"libs": libs, "missing": sorted(planned - set(libs))})
        same = libs == current.libs  # a library's validation or memory estimate for these weights counts too
        return None if same and merged.missing == current.missing and merged.source == current.source else merged
    new = new.model_copy(update={"missing": sorted(planned - set(new.libs))})
    if not new.missing or current is None:
        return new
    if current.missing and set(current.libs) <= set(new.libs):
        return new
    return None


def verify(store: ArtifactStore) -> list[str]:
    """Every catalog entry points at records, and every record at blobs, that exist: the problems found."""
    problems = []
    for e in entries(store):
        for key in [e.convert, e.config, *(ref.key for ref in e.libs.values())]:
            if load_record(store, key) is None:
                problems.append(f"{catalog_path(e.model, e.quantization)}: build {key} has no record")
    for name, record in all_records(store):
        problems += [
            f"{name}: {f.path} -> blob {f.sha256} is missing"
            for f in referenced_blobs(record)
            if not store.has_blob(f.sha256)
        ]
    return problems


class BadBlob(BaseModel):
    """A blob that does not hold what its name says, and what depends on it."""

    sha256: str
    problem: str
    builds: list[str]
    entries: list[str]


def deep_verify(
    store: ArtifactStore, workers: int = 8, progress: Callable[[int, int], None] | None = None
) -> list[BadBlob]:
    """Re-hash every blob a build record points at (in parallel); each bad one with the builds and catalog
    entries that use it. `progress(done_bytes, total_bytes)` is called as bytes are hashed."""
    users: dict[str, list[str]] = {}
    sizes: dict[str, int] = {}
    for name, record in all_records(store):
        for f in referenced_blobs(record):
            users.setdefault(f.sha256, []).append(f"{name} ({f.path})")
            sizes[f.sha256] = f.size
    total, done, lock = sum(sizes.values()), [0], threading.Lock()

    def advance(n: int) -> None:
        with lock:
            done[0] += n
            if progress:
                progress(done[0], total)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        checked = dict(zip(users, pool.map(lambda sha: store.check_blob(sha, advance), users), strict=True))
    bad, served = [], entries(store)
    for sha, problem in checked.items():
        if problem is None:
            continue
        keys = {n.split(" ", 1)[0].removeprefix(BUILDS).removesuffix(".json") for n in users[sha]}
        used_by = [
            catalog_path(e.model, e.quantization)
            for e in served
            if keys & {e.convert, e.config, *(r.key for r in e.libs.values())}
        ]
        bad.append(BadBlob(sha256=sha, problem=problem, builds=sorted(users[sha]), entries=used_by))
    return bad
