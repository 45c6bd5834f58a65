"""Processes of this machine: whether one is alive, and killing a process group."""

from __future__ import annotations

import contextlib
import os
import signal


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL a step's process group (the step and the compilers it started), if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
