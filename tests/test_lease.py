"""Leases: one builder per key across runs; a dead holder's lease lapses."""

from __future__ import annotations

import os
import time
from pathlib import Path

from mlc_farm import lease
from mlc_farm.store.local import LocalStore


def test_one_holder_at_a_time_and_a_dead_holders_lease_lapses(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    assert lease.take(store, "k", "a", seconds=1) is not None
    assert lease.take(store, "k", "b", seconds=1) is None  # a holds it
    assert lease.take(store, "k", "a", seconds=1) is not None  # a renews
    time.sleep(1.2)  # a died without releasing
    assert lease.take(store, "k", "b", seconds=1) is not None
    lease.release(store, "k", "a")  # not a's any more: nothing happens
    assert lease.take(store, "k", "a", seconds=1) is None
    lease.release(store, "k", "b")
    assert lease.take(store, "k", "a", seconds=1) is not None


def test_a_waiting_builder_gets_the_other_ones_result(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    assert lease.take(store, "k", "other", seconds=30) is not None
    polls = []

    def result() -> str | None:
        polls.append(1)
        return "built by the other run" if len(polls) >= 3 else None

    with lease.held(store, "k", 30, result, poll=0.01) as elsewhere:
        assert elsewhere == "built by the other run"
    with lease.held(store, "free-key", 30, lambda: None) as elsewhere:
        assert elsewhere is None and lease.take(store, "free-key", "someone", 30) is None  # held while building
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
