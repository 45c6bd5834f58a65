"""One error hierarchy: every error mlc-farm raises on purpose says what is wrong and what to do, is either
permanent (the same inputs fail the same way: never retried) or transient (a service hiccup: retried), and
carries the exit code the CLI ends with.

Exit codes: 0 done; 1 a build failed (or another permanent failure); 2 bad input; 3 a service (S3, the Hub,
the Prefect server) cannot be reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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


def is_transient(error: BaseException) -> bool:
    """The one allow-list of transient errors: ours, a dropped or refused connection, a timeout. Anything else
    (a toolchain failure, bad input, a bug) fails at once, since running it again gives the same result."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

    kinds = (TransientError, BotoConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionError, TimeoutError)
    return isinstance(error, kinds)


RETRY_DELAYS = (2.0, 5.0, 15.0, 30.0)


def retry_transient(call: Callable[[], T], delays: Sequence[float] = RETRY_DELAYS) -> T:
    """Run `call`, again after each delay while it fails transiently: for work whose inputs are still at
    hand (uploading a build's outputs from disk), so an outage never reruns the toolchain."""
    for delay in delays:
        try:
            return call()
        except Exception as e:
            if not is_transient(e):
                raise
            time.sleep(delay)
    return call()
