"""Numbers the way a person reads them: sizes and elapsed times."""

from __future__ import annotations


def size(n: float) -> str:
    """`512 B`, `12.0 MB`: a byte count the way a person reads it."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def clock(seconds: float) -> str:
    """`1:05`, `1:02:05`: elapsed time the way a person reads it."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
