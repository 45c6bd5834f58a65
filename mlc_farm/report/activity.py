"""What each build running in this process is doing right now (its phase, since when): read by the live status
of `mlc-farm build`. Builds run in threads of one process in embedded mode, so a process-wide map will do."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_phases: dict[str, tuple[str, float]] = {}
_lock = threading.Lock()


@contextmanager
def phase(key: str, name: str) -> Iterator[None]:
    """Build `key` is in phase `name` (a toolchain step, `uploading`, `validating`...) while the block runs."""
    with _lock:
        before = _phases.get(key)
        _phases[key] = (name, time.monotonic())
    try:
        yield
    finally:
        with _lock:
            if before is None:
                _phases.pop(key, None)
            else:
                _phases[key] = before


def rename(key: str, name: str) -> None:
    """The phase of `key` says more as it goes (`uploading 12.0 MB of 48.0 MB`); its start time stays."""
    with _lock:
        if key in _phases:
            _phases[key] = (name, _phases[key][1])


def current(key: str) -> tuple[str, float] | None:
    """(phase, seconds in it) of a build running in this process, or None."""
    with _lock:
        found = _phases.get(key)
    return (found[0], time.monotonic() - found[1]) if found else None
