"""Builds' scratch directories: named after the process that made them, so the next embedded run removes
those of a killed build (its process is gone) and never a live one's."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mlc_farm.processes import process_alive
from mlc_farm.settings import load_settings

_PREFIX = "mlc-farm-build-"


def workdir(key: str) -> Path:
    """A new scratch directory for the build of `key`, under MLC_FARM_WORK_DIR (else the system's temp)."""
    base = load_settings().work_dir
    if base:
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-{key[:12]}-", dir=base))


def remove_stale_workdirs() -> list[Path]:
    """Scratch directories of builds whose process is gone (killed, or a crashed machine): removed."""
    base = load_settings().work_dir or Path(tempfile.gettempdir())
    stale = []
    for path in base.glob(f"{_PREFIX}*") if base.is_dir() else []:
        pid = path.name.removeprefix(_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            stale.append(path)
    return stale
