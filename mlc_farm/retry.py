"""The one retry layer of a call to a service (S3, the Hub): which errors are transient, the backoff, the
time budget. Each client maps its own errors to mlc_farm.errors' at its boundary, so this knows no client."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from mlc_farm import stopping
from mlc_farm.errors import TransientError
from mlc_farm.settings import load_settings

T = TypeVar("T")


def is_transient(error: BaseException) -> bool:
    """The one allow-list of transient errors: ours, a dropped, refused or cut connection, a timeout. Anything
    else (a toolchain failure, bad input, a bug) fails at once, since running it again gives the same result.
    Each client's own errors are mapped to these at its boundary (the S3 store, the Hub), so this rule knows
    no client."""
    return isinstance(error, (TransientError, ConnectionError, TimeoutError))


@dataclass(frozen=True)
class Backoff:
    """The retry policy as parameters: jittered exponential backoff from `first` seconds, doubling up to `cap`,
    each wait drawn between `jitter` and 1 times the step."""

    first: float = 0.5
    cap: float = 15.0
    jitter: float = 0.5


def retry_transient(
    call: Callable[[], T],
    budget: float | None = None,
    transient: Callable[[BaseException], bool] = is_transient,
    backoff: Backoff = Backoff(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] | None = None,
    asked_wait: Callable[[BaseException], float | None] = lambda _e: None,
) -> T:
    """The one retry layer of a call to a service (S3, the Hub): run `call` again, with `backoff`, while it
    fails transiently and `budget` seconds (default MLC_FARM_RETRY_SECONDS) of `clock` have not passed; then the
    last error is raised. Callers above never retry again, so an outage costs one budget, not a product of
    nested attempts, and never reruns the toolchain. A wait the service asked for (`asked_wait`: its
    Retry-After) is waited at least, or, when it would pass the budget, not at all. A stop request
    (SIGINT/SIGTERM) ends the waits at once; tests give a `clock` and a `sleep` of their own instead of waiting."""
    if budget is None:
        budget = load_settings().retry_seconds
    pause = sleep or (lambda seconds: stopping.pause(seconds, "a retry"))
    deadline, step = clock() + budget, backoff.first
    while True:
        try:
            return call()
        except Exception as e:
            wait = max(step * random.uniform(backoff.jitter, 1.0), asked_wait(e) or 0.0)
            if not transient(e) or clock() + wait > deadline or stopping.requested():
                raise
        pause(wait)
        step = min(step * 2, backoff.cap)
