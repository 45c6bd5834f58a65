"""Supervising the toolchain's processes: each in its own process group with an allow-listed environment,
dying with the build, killed at once by `stop_all` when the build is stopped; and their output as a person
reads it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from mlc_farm import stopping
from mlc_farm.processes import kill_group

# What the toolchain may see of our environment: the system, Python, the thread and core settings of its numeric
# libraries (OpenMP, OpenBLAS), GPU runtimes and MLC/TVM options. Never the store's or the Hub's credentials
# (AWS_*, HF_TOKEN), which it does not need.
_ENV_NAMES = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|SHELL|TERM|TZ|LANG|LANGUAGE|TMPDIR|TEMP|TMP|PYTHONPATH|PYTHONHOME|PYTHONUNBUFFERED"
    r"|VIRTUAL_ENV|CONDA_PREFIX|LD_LIBRARY_PATH|OMP_NUM_THREADS|OPENBLAS_\w+|LC_\w+|CUDA_\w+|NVIDIA_\w+"
    r"|ROCM_\w+|HIP_\w+|HSA_\w+|VK_\w+|TVM_\w+|MLC_(?!FARM_)\w+)\Z"
)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def toolchain_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment a toolchain step runs with."""
    return {**{k: v for k, v in os.environ.items() if _ENV_NAMES.match(k)}, **(extra or {})}


def clean_line(raw: str) -> str | None:
    """A log line as a person reads it: no colour codes, and of a progress bar redrawn with carriage returns
    only its last state (None when nothing is left, e.g. a bar erased before the next log line)."""
    text = _ANSI.sub("", raw).rstrip("\n")
    if "\r" not in text:
        return text
    shown = ""
    for part in text.split("\r"):  # what a terminal shows: each redraw overwrites the line from its start
        shown = part + shown[len(part) :]
    return shown.rstrip() or None


# Process groups of the steps running now: what `stop_all` kills when the build is interrupted.
_running: set[int] = set()


_lock = threading.Lock()


def stop_all() -> int:
    """Kill every toolchain step running in this process (each with the compilers it started), and refuse new
    ones: the build is being stopped. How many were killed."""
    with _lock:
        stopping.request()
        groups = list(_running)
    for pgid in groups:
        kill_group(pgid)
    return len(groups)


def accept_steps() -> None:
    """A new build starts: steps may run again after an earlier `stop_all` in this process."""
    stopping.clear()


@contextlib.contextmanager
def tracked(proc: subprocess.Popen[Any]) -> Iterator[None]:
    """A started toolchain process, known to `stop_all` while the block runs (killed at once if stopping)."""
    with _lock:
        _running.add(proc.pid)
        refused = stopping.requested()
    if refused:
        kill_group(proc.pid)
    try:
        yield
    finally:
        with _lock:
            _running.discard(proc.pid)


def run_captured(
    args: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short program in the toolchain's interpreter (library validation): like `run`, in its own process
    group, with the allow-listed environment, dying with the build and stopped by `stop_all`."""
    proc = subprocess.Popen(
        dies_with_parent(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=toolchain_env(env),
        start_new_session=True,
    )
    with tracked(proc):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def dies_with_parent(cmd: list[str]) -> list[str]:
    """On Linux, `setpriv --pdeathsig KILL` makes the step die if the build process is killed (even by
    SIGKILL), without the thread-unsafe `preexec_fn`; elsewhere the process group is still killed on timeout."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception)\b|: error: |invalid choice")


def tool_error(lines: list[str]) -> str | None:
    """The tool's own error line (argparse's `error:`, a Python exception's last line), searched from the end:
    what a person needs first, rather than 30 lines of usage text."""
    return next((line.strip() for line in reversed(lines) if _ERROR_LINE.search(line)), None)
