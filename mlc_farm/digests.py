"""The sha256 of a file, read in chunks (what names a blob in the store, a source file in a key, a signed file),
and of a JSON document in one canonical form (what names a build key, and what a signature binds)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Read into one buffer, reused: hashing many large files at once allocates nothing per block."""
    h, buffer = hashlib.sha256(), bytearray(chunk)
    view = memoryview(buffer)
    with path.open("rb", buffering=0) as f:
        while got := f.readinto(buffer):
            h.update(view[:got])
    return h.hexdigest()


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys, no whitespace)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class NotRegular(OSError):
    """A path that is not a regular file where one is expected: a link (`link` True), a FIFO or a device."""

    def __init__(self, path: Path, link: bool) -> None:
        super().__init__(f"{path} is {'a link' if link else 'not a regular file'}")
        self.link = link


def open_regular(path: Path) -> int:
    """A read-only descriptor of the regular file at `path`, opened without following a link and without blocking
    on a FIFO (read through, either could be anything, or never end); NotRegular otherwise, FileNotFoundError
    when nothing is there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise NotRegular(path, link=True) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegular(path, link=False)
    os.set_blocking(fd, True)
    return fd


def copy_sha256(
    src: BinaryIO,
    out: Any,
    progress: Callable[[int], None] | None = None,
    limit: int | None = None,
    chunk: int = 8 << 20,
) -> str | None:
    """Copy `src` to `out` (anything with `write`) in one pass, hashing what was read: its sha256, or None as
    soon as more than `limit` bytes came (read one byte past it, never more)."""
    h, done = hashlib.sha256(), 0
    while block := src.read(chunk if limit is None else min(chunk, limit - done + 1)):
        done += len(block)
        if limit is not None and done > limit:
            return None
        h.update(block)
        out.write(block)
        if progress:
            progress(len(block))
    return h.hexdigest()
