"""Writing a directory a user named (`pull -o`, `tiny-model`): all or nothing, never over their files."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mlc_farm.errors import BadInput


@contextlib.contextmanager
def replacing(out: Path, what: str, replace: bool = False) -> Iterator[Path]:
    """A staging directory beside `out`, which becomes `out` only when the block succeeds: a failed or interrupted
    write leaves nothing half-written. A file in the way, or a non-empty `out` without `replace`, is bad input
    (`what` names the argument in the message)."""
    if out.exists() and not out.is_dir():
        raise BadInput(f"{what} {out}: a file is in the way; give a directory")
    if out.is_dir() and any(out.iterdir()) and not replace:
        raise BadInput(f"{what} {out} is not empty: write into a new directory, or add --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    except OSError as e:
        raise BadInput(f"{what} {out}: cannot write there ({e.strerror})") from None
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
