"""Artifact stores: one protocol (`ArtifactStore`), a local directory (the embedded default) and S3, chosen by
URL from a scheme registry; every path written (`layout`), documents read as untrusted (`documents`), S3's
errors in one table (`s3_errors`), and leases (`lease`: one builder per key, gc's).

May import the foundation modules only (bytes and documents by path: knows nothing of what they mean;
tests/test_structure.py holds the table).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import threading
from collections.abc import Callable, Collection, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from mlc_farm.errors import BadInput, redact_urls
from mlc_farm.names import shorten
from mlc_farm.settings import Settings, load_settings


class ArtifactStore(Protocol):
    url: str
    readers: int  # documents read at once: S3's GETs wait on the network, a directory's reads on nothing

    def ping(self) -> None:
        """Fail fast, naming the store, when it cannot be reached (an endpoint that never answers)."""
        ...

    def check_writable(self) -> None:
        """Before a build spends anything: the store takes writes (BadInput naming it if not)."""
        ...

    def presigned_url(self, name: str, expires: int) -> str:
        """A link to the object `name` for someone without credentials, valid `expires` seconds (StoreError
        where the backend has no such links)."""
        ...

    def has_blob(self, sha256: str) -> bool: ...

    def put_blob(self, path: Path, sha256: str, progress: Callable[[int], None] | None = None) -> bool:
        """Store `path` as the blob `sha256` unless a blob with these very bytes is there already (a stored blob
        that does not hold them is replaced); True if it was sent. `progress` gets byte counts as they go."""
        ...

    def check_blob(self, sha256: str, progress: Callable[[int], None] | None = None) -> str | None:
        """Read the blob and hash it: None when it holds what its name says, else what is wrong."""
        ...

    def get_blob(
        self, sha256: str, dest: Path, progress: Callable[[int], None] | None = None, size: int | None = None
    ) -> None:
        """Write the blob to `dest`, verified; nothing is left at `dest` if it does not match. `progress` gets
        byte counts as they land. `size`, the recorded size, bounds the read: a blob that is larger is
        CorruptBlobError at its first byte too many (a hostile store can hold anything under a name)."""
        ...

    def read_json(self, name: str) -> dict[str, Any] | None: ...

    def write_json(self, name: str, data: dict[str, Any]) -> None: ...

    def write_text(self, name: str, text: str, content_type: str) -> None:
        """A page of the store (the catalog page): replaced whole, never seen half-written."""
        ...

    def update_json(
        self, name: str, change: Callable[[dict[str, Any] | None], dict[str, Any]], replace_damaged: bool = True
    ) -> dict[str, Any]:
        """Read-modify-write without losing a concurrent writer's update. A document that does not parse is
        given to `change` as None (replaced whole), or with `replace_damaged=False` is DamagedDocumentError."""
        ...

    def names(self, prefix: str) -> Iterator[str]: ...

    def list_with_info(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        """(name, size, last modified) of every object under `prefix`."""
        ...

    def delete(self, name: str) -> None: ...

    def abort_stale_uploads(
        self, older_than: timedelta, dry_run: bool = False, keep: Collection[str] = (), now: datetime | None = None
    ) -> list[str]:
        """Drop uploads that a killed process left unfinished (never visible to readers), never those of a live
        process nor of the blobs in `keep`; their names. `now`: the store's time (`lease.store_now`) that their
        age is counted from, so this machine's clock plays no part."""
        ...

    def close(self) -> None:
        """Give back what the store holds (clients, connections, threads); `close_stores` does it at exit."""
        ...


def open_store(url: str | None = None, must_exist: bool = False) -> ArtifactStore:
    """The store at `url`, else MLC_FARM_STORE, else ./artifacts: `s3://bucket/prefix`, `file://DIR` or a plain
    path. Opening never creates anything (the first write does); `must_exist` is for commands that only read,
    so a mistyped local store is an error instead of an empty catalog."""
    settings = load_settings()
    if url is not None and not url.strip():
        raise BadInput(
            "--store '': give a store (a path, file://DIR or s3://bucket/prefix), or leave it out to use MLC_FARM_STORE"
        )
    url = url or settings.store
    if len(url) > 1024:
        raise BadInput(f"store {shorten(url)}: an address of {len(url)} characters; no path or URL is that long")
    if re.match(r"(?i)[a-z][a-z0-9+.-]*://[^/]*@", url):
        raise BadInput(
            f"store {redact_urls(url)!r}: credentials do not belong in a store URL (they would show in logs); "
            "give them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or an instance role"
        )
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise BadInput(
            f"store {url!r}: unknown scheme {scheme + '://'!r}; use file://DIR, a path, or s3://bucket/prefix"
        )
    store = backend(url, settings, must_exist)
    store.ping()
    return store


def _open_local(url: str, settings: Settings, must_exist: bool) -> ArtifactStore:
    from mlc_farm.store.local import LocalStore

    if not url.removeprefix("file://"):
        raise BadInput(f"store {url!r}: no directory after file://; give file:///abs/path or a path")
    store = LocalStore(Path(url.removeprefix("file://")))
    if must_exist and not store.root.is_dir():
        raise BadInput(f"no store at {store.root} (nothing was built there): check --store or MLC_FARM_STORE")
    return store


def _open_s3(url: str, settings: Settings, must_exist: bool) -> ArtifactStore:
    """One S3 store per process for a URL, settings and credentials: every task of a build shares its client,
    transfer manager and threads (and their bound on memory), instead of each making its own."""
    from mlc_farm.store.s3 import S3Store, client_identity  # boto3 is loaded only for an S3 store

    key = hashlib.sha256(json.dumps([url, settings.model_dump(mode="json"), client_identity()]).encode()).hexdigest()
    with _OPEN_LOCK:
        if (store := _OPEN.get(key)) is None:
            store = _OPEN[key] = S3Store(url, settings)
    return store


def close_stores() -> None:
    """Close every store this process keeps open (at exit; a test may call it to start afresh)."""
    with _OPEN_LOCK:
        stores = list(_OPEN.values())
        _OPEN.clear()
    for store in stores:
        store.close()


_OPEN: dict[str, ArtifactStore] = {}
_OPEN_LOCK = threading.Lock()
atexit.register(close_stores)


# A backend per URL scheme: a new one is a function here and a module beside local.py and s3.py.
_BACKENDS: dict[str, Callable[[str, Settings, bool], ArtifactStore]] = {"file": _open_local, "s3": _open_s3}
