"""One error hierarchy: every error mlc-farm raises on purpose says what is wrong and what to do, is either
permanent (the same inputs fail the same way: never retried) or transient (a service hiccup: retried), and
carries the exit code the CLI ends with.

Exit codes: 0 done; 1 a build failed (or another permanent failure); 2 bad input; 3 a service (S3, the Hub,
the Prefect server) cannot be reached.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class FarmError(Exception):
    """Base of the errors mlc-farm raises on purpose."""

    exit_code = 1


class PermanentError(FarmError):
    """Retrying gives the same result: fix the input, the data or the configuration."""


class TransientError(FarmError):
    """A service that failed for now (5xx, throttling, a dropped connection): worth retrying."""

    exit_code = 3


class BadInput(PermanentError):
    """Something a user gave (a matrix, a setting, an option, a path) that cannot be used."""

    exit_code = 2


class ServiceUnreachable(TransientError):
    """A service (S3, the Hub, a Prefect server) did not answer."""


class Stopped(FarmError):
    """A wait ended because the process is being stopped (SIGINT/SIGTERM)."""


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")


def redact_urls(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://***@host` wherever it appears: no message, log or page ever
    shows credentials that someone put in a URL."""
    return _USERINFO.sub(r"\1***@", text)


def is_transient(error: BaseException) -> bool:
    """The one allow-list of transient errors: ours, a dropped, refused or cut connection, a timeout. Anything
    else (a toolchain failure, bad input, a bug) fails at once, since running it again gives the same result."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    kinds = (TransientError, BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError, TimeoutError)
    return isinstance(error, kinds)


def retry_transient(
    call: Callable[[], T], budget: float | None = None, transient: Callable[[BaseException], bool] = is_transient
) -> T:
    """The one retry layer of a call to a service (S3, the Hub): run `call` again, with jittered exponential
    backoff (0.5 s doubling up to 15 s), while it fails transiently and `budget` seconds (default
    MLC_FARM_RETRY_SECONDS) have not passed; then the last error is raised. Callers above never retry again, so
    an outage costs one budget, not a product of nested attempts, and never reruns the toolchain."""
    if budget is None:
        from mlc_farm.settings import load_settings

        budget = load_settings().retry_seconds
    from mlc_farm import stopping

    deadline, delay = time.monotonic() + budget, 0.5
    while True:
        try:
            return call()
        except Exception as e:
            wait = delay * random.uniform(0.5, 1.0)
            if not transient(e) or time.monotonic() + wait > deadline or stopping.requested():
                raise
        stopping.pause(wait, "a retry")
        delay = min(delay * 2, 15.0)
