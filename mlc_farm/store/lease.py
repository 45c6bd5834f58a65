"""Leases in the store: one builder per build key at a time, across runs and machines; and gc's lease, which
keeps garbage collection from removing what a running build is about to reference.

Two overlapping nightlies (or a nightly and a `build-model` run) would otherwise both spend GPU hours on the
same key. The first to take a key's lease builds it; the other waits for its record. The holder renews the
lease every third of MLC_FARM_LEASE_SECONDS, and each renewal changes the document. A waiter trusts what it
sees, not what the holder claims: a lease whose document has not changed for MLC_FARM_LEASE_SECONDS of the
waiter's own clock has lapsed, whatever its `expires_at` says (a holder with another setting, a skewed clock or
a forged file cannot keep a key forever). A lease of a process of this machine that is gone lapses at once. No
machine's clock is compared with another's: gc judges by the store's own time (see `collecting`).

gc versus builds (as registries do it): before a build puts or re-uses any blob, it names them in its lease
and then looks for gc's lease; gc takes its lease and then reads the build leases. Whichever comes second sees
the other: gc keeps every blob a live lease names, and a build that finds gc running waits for it to end before
it checks which blobs the store has. No blob of a build can go between its upload and its record.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ValidationError

from mlc_farm import stopping
from mlc_farm.errors import DamagedDocumentError, StoreError
from mlc_farm.processes import process_alive
from mlc_farm.store import ArtifactStore
from mlc_farm.store.documents import read_all
from mlc_farm.store.layout import CLOCK, GC_LEASE, LEASES, lease_path

Clock = Callable[[], float]
Protected = Callable[[], set[str]]


class Lease(BaseModel):
    holder: str
    expires_at: datetime
    renewed_at: datetime | None = None  # changes at every renewal: what a waiter watches
    blobs: list[str] = []  # the blobs the holder is about to put or re-use (gc keeps them)


def holder_id() -> str:
    """Who holds a lease: host, process and a nonce, so two builds in one process never share one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _dead_here(holder: str) -> bool:
    """A holder on this machine whose process is gone (killed): its lease need not be waited out."""
    host, _, rest = holder.partition(":")
    pid = rest.split(":", 1)[0]
    return host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))


def _current(doc: dict[str, Any] | None) -> Lease | None:
    try:
        return Lease.model_validate(doc) if doc else None
    except ValidationError:
        return None  # damaged: as good as free


@dataclass
class Observer:
    """What one waiter has seen of other holders' leases, by its own clock: a lease whose document stays the
    same for `seconds` has lapsed, whatever its `expires_at` claims."""

    seconds: float
    clock: Clock = time.monotonic
    seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def lapsed(self, name: str, lease: Lease) -> bool:
        version = f"{lease.holder}|{lease.renewed_at}|{lease.expires_at}"
        now = self.clock()
        if self.seen.get(name, ("", 0.0))[0] != version:
            self.seen[name] = (version, now)
        return now - self.seen[name][1] >= self.seconds


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def live(name: str, other: Lease | None, observer: Observer | None) -> bool:
    """Another holder's lease that still holds: its process not known dead and, for a waiter, renewed within the
    waiter's own lease period by the waiter's own clock. Never this machine's time against the holder's
    `expires_at` (another machine's clock: one fast by two days would see every lease lapsed). Without an
    observer (a holder renewing its own) another holder's lease is live: it is never taken back."""
    if other is None or _dead_here(other.holder):
        return False
    return observer is None or not observer.lapsed(name, other)


def renewed_lately(lease: Lease, written: datetime | None, store_now: datetime, seconds: float) -> bool:
    """Whether the store saw this lease renewed within its period (the holder's own `expires_at - renewed_at`,
    both of its clock, or `seconds` if longer), by the store's clock alone: `written` is when the store wrote
    the document, `store_now` when it wrote one of ours (`store_now`)."""
    if written is None or _dead_here(lease.holder):
        return False
    period = (lease.expires_at - lease.renewed_at).total_seconds() if lease.renewed_at else 0.0
    return store_now - written < timedelta(seconds=max(period, seconds))


def store_now(store: ArtifactStore) -> datetime:
    """The store's own time: when it wrote a document this process writes now (S3's LastModified, a file's
    mtime), never this machine's clock, which may be off the other writers'."""
    name = f"{CLOCK}{uuid.uuid4().hex}.json"
    store.write_json(name, {"holder": holder_id()})
    try:
        return next(modified for found, _, modified in store.list_with_info(CLOCK) if found == name)
    finally:
        store.delete(name)


def take(
    store: ArtifactStore,
    key: str,
    holder: str,
    seconds: float,
    observer: Observer | None = None,
    blobs: list[str] | None = None,
    name: str | None = None,
    at: datetime | None = None,
) -> Lease | None:
    """Take (or renew) the lease of `key` unless another holder's is live; the lease (stamped `at`, default now),
    or None. A renewal keeps the blobs named before unless `blobs` replaces them."""
    name = name or lease_path(key)

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        other = _current(doc)
        now = at or _utc_now()  # written for the record and as the renewal's mark; never compared with theirs
        if other and other.holder != holder and live(name, other, observer):
            return doc  # type: ignore[return-value]  # someone else's, still live: unchanged
        kept = other.blobs if other and other.holder == holder and blobs is None else (blobs or [])
        return Lease(holder=holder, expires_at=now + timedelta(seconds=seconds), renewed_at=now, blobs=kept).model_dump(
            mode="json"
        )

    got = _current(store.update_json(name, change))
    return got if got and got.holder == holder else None


def release(store: ArtifactStore, key: str, holder: str, name: str | None = None) -> None:
    name = name or lease_path(key)
    if (lease := _read(store, name)) and lease.holder == holder:
        store.delete(name)


@contextlib.contextmanager
def _renewed(store: ArtifactStore, key: str, holder: str, seconds: float, name: str | None = None) -> Iterator[None]:
    """Renew a lease this process holds while the block runs, and release it after."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 3):
            with contextlib.suppress(Exception):  # missed renewals are retried at the next tick
                take(store, key, holder, seconds, name=name)

    renewer = threading.Thread(target=renew, daemon=True, name=f"lease {key[:12]}")
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(Exception):  # a lease left behind lapses by itself
            release(store, key, holder, name=name)


@dataclass
class Holding:
    """A build under its key's lease: `elsewhere` is another run's result when there is nothing to build."""

    store: ArtifactStore
    key: str
    holder: str
    seconds: float
    elsewhere: Any = None
    clock: Clock = time.monotonic

    def announce(self, blobs: list[str], poll: float = 2.0) -> None:
        """Name the blobs this build is about to put or re-use, then wait out a gc that is running: from here
        until the record is written, gc keeps them (see the module's docstring)."""
        if take(self.store, self.key, self.holder, self.seconds, blobs=sorted(set(blobs))) is None:
            raise StoreError(f"lost the lease of build {self.key[:12]} (it lapsed while building); run again")
        wait_for_gc(self.store, self.seconds, poll, self.clock)


def wait_for_gc(store: ArtifactStore, seconds: float, poll: float = 2.0, clock: Clock = time.monotonic) -> None:
    observer = Observer(seconds, clock)
    while live(GC_LEASE, _read(store, GC_LEASE), observer):
        stopping.pause(poll, "a gc of the store to finish")


def _read(store: ArtifactStore, name: str) -> Lease | None:
    try:
        return _current(store.read_json(name))
    except DamagedDocumentError:
        return None


@contextlib.contextmanager
def held(
    store: ArtifactStore,
    key: str,
    seconds: float,
    wait_for: Callable[[], Any],
    poll: float = 2.0,
    clock: Clock = time.monotonic,
) -> Iterator[Holding]:
    """Hold the lease of `key` while the block builds it, renewing it; the Holding's `elsewhere` is what
    `wait_for()` returned once another holder's build appeared (then nothing is to build). A stop request
    (SIGINT/SIGTERM) ends the wait at once."""
    holder, observer = holder_id(), Observer(seconds, clock)
    while take(store, key, holder, seconds, observer) is None:
        if (done := wait_for()) is not None:
            yield Holding(store, key, holder, seconds, elsewhere=done, clock=clock)
            return
        stopping.pause(poll, f"the lease of build {key[:12]}")
    with _renewed(store, key, holder, seconds):
        yield Holding(store, key, holder, seconds, clock=clock)


@dataclass(frozen=True)
class Collecting:
    """What gc works with under its lease: the store's time, and `protected()`: the blobs that live build leases
    name, to be read after the lease is taken."""

    now: datetime
    protected: Protected


@contextlib.contextmanager
def collecting(store: ArtifactStore, seconds: float) -> Iterator[Collecting]:
    """gc's lease while the block collects. Every time gc judges by is the store's: a lease is live when the
    store wrote it within its period of the store's now. Another gc that is running is an error, not a wait."""
    holder = holder_id()
    if take(store, "gc", holder, seconds, Observer(seconds), name=GC_LEASE) is None:
        other = _read(store, GC_LEASE)
        raise StoreError(f"another gc of {store.url} is running ({other.holder if other else 'unknown'}); try later")

    with _renewed(store, "gc", holder, seconds, name=GC_LEASE):
        now = store_now(store)

        def protected() -> set[str]:
            written = {name: modified for name, _, modified in store.list_with_info(LEASES) if name != GC_LEASE}
            leases = read_all(store, list(written), Lease)
            return {b for name, got in leases if renewed_lately(got, written[name], now, seconds) for b in got.blobs}

        yield Collecting(now, protected)
