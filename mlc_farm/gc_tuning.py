"""Fewer full collections while a run reads the store: a run keeps every build record it read (hundreds of
thousands of objects at catalog scale) for its whole length, and CPython's default thresholds then walk all of
them again every few thousand allocations (1.3 s of a 9.8 s no-op nightly at 5,000 cells). mypy tunes its
collector for the same reason. Young objects are still collected as often as before, so cyclic garbage that
dies young costs no more memory; what survives waits ten times as long for a full collection."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

FULL_EVERY = 100  # young collections of the middle generation per full one (CPython's default: 10)


@contextlib.contextmanager
def fewer_full_collections() -> Iterator[None]:
    """Full collections FULL_EVERY middle ones apart for the block (never more often than they already were), then
    the thresholds as they were."""
    before = gc.get_threshold()
    gc.set_threshold(before[0], before[1], max(before[2], FULL_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(*before)
