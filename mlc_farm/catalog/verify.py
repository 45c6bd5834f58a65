"""Does the store hold what its catalog and records say: every entry's records and signature, every record's
blobs and attestation (`mlc-farm verify`), and with --deep every blob's bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from pydantic import BaseModel

from mlc_farm.errors import StoreError
from mlc_farm.records.folder import entry_files
from mlc_farm.records.reads import all_records, entries, load_record
from mlc_farm.records.schema import CatalogEntry, now, referenced_blobs
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import BUILDS, catalog_path
from mlc_farm.trust import attestations, keys
from mlc_farm.trust.dsse import SignatureRefused
from mlc_farm.trust.entry_signatures import signed


def verify(store: ArtifactStore) -> list[str]:
    """Every catalog entry points at records, and every record at blobs, that exist; every entry's signature
    holds as a pull would check it, and every record carries its build's attestation: the problems found."""
    problems, trusted = [], keys.trusted_keys()
    for e in entries(store):
        for key in [e.convert, e.config, *(ref.key for ref in e.libs.values())]:
            if load_record(store, key) is None:
                problems.append(f"{catalog_path(e.model, e.quantization)}: build {key} has no record")
        if problem := signature_problem(store, e, trusted):
            problems.append(f"{catalog_path(e.model, e.quantization)}: {problem}")
    for name, record in all_records(store):
        problems += [
            f"{name}: {f.path} -> blob {f.sha256} is missing"
            for f in referenced_blobs(record)
            if not store.has_blob(f.sha256)
        ]
        try:
            attestations.check(record, trusted)
        except SignatureRefused as e:
            problems.append(f"{name}: {e}")
    return problems


def signature_problem(store: ArtifactStore, entry: CatalogEntry, trusted: list[bytes]) -> str | None:
    """Why a pull of the entry would be refused for its signature (missing, failing, expired or stale), None
    when it holds; each with what mends it."""
    mend = "the next nightly signs it again from its builds' attestations (or `mlc-farm resign`)"
    try:
        found = signed(entry, entry.model, entry.quantization, trusted)
    except SignatureRefused as e:
        return f"{str(e).split(': ', 1)[-1]}: a pull is refused; {mend}"
    if found.expires <= now():
        return f"its signature expired on {found.expires:%Y-%m-%d %H:%M} UTC: a pull is refused; {mend}"
    try:
        files = {p: f.sha256 for p, f in entry_files(store, entry).items()}
    except StoreError as e:
        return str(e)
    if files != found.files:
        return f"its builds' files are not the ones its signature lists (stale): a pull is refused; {mend}"
    return None


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
