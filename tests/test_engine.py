"""How the nightly flow waits on its builds (mlc_farm/flows/engine.py): with Prefect's own futures, in the main
thread, as `mlc-farm build` runs it."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future
from typing import Any

from prefect.futures import PrefectConcurrentFuture

from mlc_farm.flows.engine import ended


def _future() -> tuple[Future[Any], PrefectConcurrentFuture[Any]]:
    inner: Future[Any] = Future()
    return inner, PrefectConcurrentFuture(uuid.uuid4(), inner)


def test_the_flow_hears_of_a_build_that_ended_at_once() -> None:
    """Prefect's `wait` waited out its timeout for every future, under a SIGALRM in the main thread that once
    failed a build's flow with `RuntimeError: release unlocked lock`. One ended build is enough to return, and
    the timeout is an hour: with the old wait this test would hang until pytest's timeout."""
    assert threading.current_thread() is threading.main_thread()  # where Prefect would have set the alarm
    finished, finished_handle = _future()
    _, running_handle = _future()
    ender = threading.Thread(target=finished.set_result, args=("built",))
    ender.start()
    assert ended([running_handle, finished_handle], timeout=3600) == [finished_handle]
    ender.join()


def test_nothing_ended_is_an_empty_list_after_the_timeout() -> None:
    _, running_handle = _future()
    assert ended([running_handle], timeout=0.01) == []
