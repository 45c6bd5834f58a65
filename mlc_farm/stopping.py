"""The one flag that says this process is being stopped (SIGINT/SIGTERM): toolchain steps refuse to start,
and waits (for a lease, for a gc) end at once instead of outliving the signal."""

from __future__ import annotations

import threading

from mlc_farm.errors import Stopped

_event = threading.Event()


def request() -> None:
    _event.set()


def clear() -> None:
    """A new run starts in this process: an earlier stop is over."""
    _event.clear()


def requested() -> bool:
    return _event.is_set()


def pause(seconds: float, what: str) -> None:
    """Sleep `seconds`, or raise Stopped (naming `what` was waited for) as soon as a stop is requested."""
    if _event.wait(seconds):
        raise Stopped(f"stopped while waiting for {what}")
