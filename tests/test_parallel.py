"""`mlc_farm.parallel.each`: every item's result in order, at most `workers` at once, and the first failure
stops the rest from starting."""

from __future__ import annotations

import signal
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlc_farm.parallel import each


@given(st.lists(st.integers()), st.integers(min_value=1, max_value=8))
def test_every_result_in_the_items_order(items: list[int], workers: int) -> None:
    assert each(lambda x: x * 2, items, workers) == [x * 2 for x in items]


def test_one_worker_runs_in_the_calling_thread() -> None:
    assert set(each(lambda _: threading.get_ident(), range(5), 1)) == {threading.get_ident()}


def test_at_most_workers_at_once() -> None:
    lock, now, most = threading.Lock(), [0], [0]
    gate = threading.Barrier(3, timeout=10)  # three calls meet here: the pool holds at least that many at once

    def call(i: int) -> int:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        if i < 3:
            gate.wait()
        with lock:
            now[0] -= 1
        return i

    assert each(call, range(40), 3) == list(range(40))
    assert most[0] == 3


def test_the_first_failure_is_raised_and_no_item_starts_after_it() -> None:
    started: list[int] = []
    second, failing = threading.Event(), threading.Event()

    def call(i: int) -> int:
        started.append(i)
        if i == 0:
            second.wait(10)  # the other worker holds item 1 when item 0 fails
            failing.set()
            raise ValueError("item 0")
        second.set()
        failing.wait(10)
        return i

    with pytest.raises(ValueError, match="item 0"):
        each(call, range(1000), 2)
    assert started[:2] in ([0, 1], [1, 0]) and len(started) < 1000  # the other worker stopped taking items


def test_an_interrupt_of_the_waiting_thread_stops_the_workers_taking_items() -> None:
    """A signal handled while `each` waits (SIGINT, SIGTERM as the commands handle them) ends it; the workers
    finish the calls they hold and take no further item, so a command stops within seconds."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread")

    class Stopped(Exception):
        pass

    interrupted = threading.Event()

    def stop(*_: object) -> None:
        interrupted.set()
        raise Stopped

    started: list[int] = []

    def call(i: int) -> int:
        started.append(i)
        if i == 0:
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        interrupted.wait(10)  # every call holds its worker until the waiting thread was interrupted
        return i

    before, threads = signal.signal(signal.SIGUSR1, stop), set(threading.enumerate())
    try:
        with pytest.raises(Stopped):
            each(call, range(1000), 2)
    finally:
        signal.signal(signal.SIGUSR1, before)
    for worker in set(threading.enumerate()) - threads:  # `each`'s workers, once they are done
        worker.join(10)
    assert interrupted.is_set() and len(started) < 1000
