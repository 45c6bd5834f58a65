"""Leases in the store: one builder per build key at a time, across runs and machines.

Two overlapping nightlies (or a nightly and a `build-model` run) would otherwise both spend GPU hours on the
same key. The first to take a key's lease builds it; the other waits for its record. A lease expires unless
its holder renews it, so a dead holder's lease lapses and the key is built by whoever comes next.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ValidationError

from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import lease_path
from mlc_farm.store.local import process_alive


class Lease(BaseModel):
    holder: str
    expires_at: datetime


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


def take(store: ArtifactStore, key: str, holder: str, seconds: float) -> Lease | None:
    """Take (or renew) the lease of `key` unless another holder has a live one; the lease, or None."""
    now = datetime.now(timezone.utc)
    mine = Lease(holder=holder, expires_at=now + timedelta(seconds=seconds))

    def change(doc: dict[str, Any] | None) -> dict[str, Any]:
        other = _current(doc)
        if other and other.holder != holder and other.expires_at > now and not _dead_here(other.holder):
            return doc  # type: ignore[return-value]  # someone else's, still live: unchanged
        return mine.model_dump(mode="json")

    got = _current(store.update_json(lease_path(key), change))
    return got if got and got.holder == holder else None


def release(store: ArtifactStore, key: str, holder: str) -> None:
    if (lease := _current(store.read_json(lease_path(key)))) and lease.holder == holder:
        store.delete(lease_path(key))


@contextlib.contextmanager
def held(
    store: ArtifactStore, key: str, seconds: float, wait_for: Callable[[], Any], poll: float = 2.0
) -> Iterator[Any]:
    """Hold the lease of `key` while the block builds it, renewing it; yields None when this process is to
    build, or what `wait_for()` returned once another holder's build appeared (then nothing is to build)."""
    holder = holder_id()
    while take(store, key, holder, seconds) is None:
        if (done := wait_for()) is not None:
            yield done
            return
        time.sleep(poll)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(seconds / 3):
            with contextlib.suppress(Exception):  # missed renewals are retried at the next tick
                take(store, key, holder, seconds)

    renewer = threading.Thread(target=renew, daemon=True, name=f"lease {key[:12]}")
    renewer.start()
    try:
        yield None
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(Exception):  # a lease left behind lapses by itself
            release(store, key, holder)
