"""Leases: one builder per key across runs; a dead holder's lease lapses."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlc_farm import stopping
from mlc_farm.errors import Stopped, StoreError
from mlc_farm.store import lease
from mlc_farm.store.layout import lease_path
from mlc_farm.store.local import LocalStore


def test_one_holder_at_a_time_and_a_lease_not_renewed_lapses(tmp_path: Path) -> None:
    """b waits by its own clock: a's lease lapses once its document has stayed the same for a lease period of
    b's clock, never by comparing b's time with the `expires_at` a's machine wrote."""
    store, t0, now = LocalStore(tmp_path / "s"), datetime(2026, 12, 1, tzinfo=timezone.utc), [0.0]
    b_sees = lease.Observer(1, clock=lambda: now[0])
    assert lease.take(store, "k", "a", seconds=1, at=t0) is not None
    assert lease.take(store, "k", "b", seconds=1, observer=b_sees, at=t0 + timedelta(days=2)) is None  # a holds it
    now[0] = 0.8  # b's clock two days ahead changes nothing: a's lease is live while a renews it
    assert lease.take(store, "k", "a", seconds=1, at=t0 + timedelta(seconds=0.8)) is not None  # a renews
    assert lease.take(store, "k", "b", seconds=1, observer=b_sees) is None
    now[0] = 1.7
    assert lease.take(store, "k", "b", seconds=1, observer=b_sees) is None  # 0.9 s since a renewed, by b's clock
    now[0] = 2.0
    assert lease.take(store, "k", "b", seconds=1, observer=b_sees) is not None  # a died without renewing
    lease.release(store, "k", "a")  # not a's any more: nothing happens
    assert lease.take(store, "k", "a", seconds=1) is None  # nor does a renewal take it back
    lease.release(store, "k", "b")
    assert lease.take(store, "k", "a", seconds=1) is not None


def test_gc_judges_a_lease_by_the_stores_clock_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    t0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
    held = lease.Lease(holder="elsewhere:1:x", expires_at=t0 + timedelta(seconds=300), renewed_at=t0, blobs=["b"])
    written = lease.store_now(store)
    # Written by the store a minute before the store's now: live for a 300 s lease, whatever the holder's
    # clock said (its expires_at is a day in the past of this machine's).
    assert lease.renewed_lately(held, written, written + timedelta(seconds=60), seconds=30)
    assert not lease.renewed_lately(held, written, written + timedelta(seconds=301), seconds=30)
    assert lease.renewed_lately(held, written, written + timedelta(seconds=301), seconds=600)  # gc's own, longer
    assert not list(store.names("clock/"))  # the store's time was read from a document deleted after


def test_a_waiting_builder_gets_the_other_ones_result(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    assert lease.take(store, "k", "other", seconds=30) is not None
    polls = []

    def result() -> str | None:
        polls.append(1)
        return "built by the other run" if len(polls) >= 3 else None

    with lease.held(store, "k", 30, result, poll=0.01) as holding:
        assert holding.elsewhere == "built by the other run"
    with lease.held(store, "free-key", 30, lambda: None) as holding:
        assert holding.elsewhere is None and lease.take(store, "free-key", "someone", 30) is None  # held
    assert lease.take(store, "free-key", "someone", 30) is not None  # released after


def test_a_killed_holder_on_this_machine_need_not_be_waited_out(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    store = LocalStore(tmp_path / "s")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = f"{socket.gethostname()}:{gone.stdout.strip()}:0000"
    assert lease.take(store, "k", dead, seconds=300) is not None
    assert lease.take(store, "k", "another-host:1:x", seconds=300) is not None  # the dead holder's lease is free
    assert lease.take(store, "k", f"{socket.gethostname()}:{os.getpid()}:1111", seconds=300) is None  # a live one


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _forge(store: LocalStore, key: str, holder: str, years: int = 100) -> None:
    """A lease from another host that claims to hold for `years` (a skewed clock, another setting, a forgery)."""
    far = datetime.now(timezone.utc) + timedelta(days=365 * years)
    store.write_json(lease_path(key), {"holder": holder, "expires_at": far.isoformat()})


def test_a_lease_not_renewed_for_the_waiters_lease_period_has_lapsed_whatever_it_claims(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path / "s"), Clock()
    _forge(store, "k", "far-host:1:x")
    seen = lease.Observer(seconds=300, clock=clock)
    assert lease.take(store, "k", "me", 300, seen) is None  # first seen now: trusted for a lease period
    clock.now = 299
    assert lease.take(store, "k", "me", 300, seen) is None
    clock.now = 300  # unchanged for 300 s of the waiter's own clock: lapsed
    got = lease.take(store, "k", "me", 300, seen)
    assert got is not None and got.holder == "me"


def test_a_renewed_lease_is_waited_for(tmp_path: Path) -> None:
    store, clock = LocalStore(tmp_path / "s"), Clock()
    seen = lease.Observer(seconds=300, clock=clock)
    for t in (0, 200, 400, 600):  # the holder renews every 200 s of our clock: each renewal changes the doc
        assert lease.take(store, "k", "holder", 300) is not None
        clock.now = t + 199
        assert lease.take(store, "k", "me", 300, seen) is None


def test_a_stop_request_ends_the_wait_for_a_lease_at_once(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    _forge(store, "k", "far-host:1:x")
    threading.Timer(0.3, stopping.request).start()
    began = time.monotonic()
    try:
        with pytest.raises(Stopped, match="lease of build k"), lease.held(store, "k", 300, lambda: None, poll=60):
            pass
    finally:
        stopping.clear()
    assert time.monotonic() - began < 5


def test_gc_keeps_what_a_live_build_lease_names_and_a_build_waits_out_a_running_gc(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with lease.held(store, "k", 300, lambda: None) as holding:
        holding.announce(["a" * 64])
        with lease.collecting(store, 300) as view:
            assert view.protected() == {"a" * 64}
            with pytest.raises(StoreError, match="another gc"), lease.collecting(store, 300):
                pass
            waited = threading.Event()

            def announce_during_gc() -> None:
                holding.announce(["b" * 64], poll=0.05)
                waited.set()

            worker = threading.Thread(target=announce_during_gc)
            worker.start()
            time.sleep(0.3)
            assert not waited.is_set()  # the build waits while gc holds its lease
            assert view.protected() == {"b" * 64}  # what it names is kept from now on
        worker.join(5)
        assert waited.is_set()  # gc ended: the build goes on
    assert not list(store.names("leases/"))  # both released
