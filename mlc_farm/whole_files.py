"""A small file replaced whole: written beside it under a temporary name, then renamed over it, so a reader (or a
crash) sees the old file or the new one, never half of one, and a failed write leaves no temporary file behind."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def replace_whole(path: Path, text: str, mode: int | None = None) -> None:
    """`text` as the whole of `path`, with `mode` (else a new file's, as the umask makes it)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if mode is not None:
            temporary.chmod(mode)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
