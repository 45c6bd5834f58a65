"""Calling the toolchain: its command on this pool (`python -m mlc_llm` with the current interpreter unless
MLC_FARM_MLC_LLM or the pool's MLC_FARM_POOL_MLC_LLM says otherwise, e.g. `/opt/mlc/bin/python -m mlc_llm`,
so a worker image can keep MLC in its own environment), its interpreter, one `mlc_llm` step with its log,
and a script of `scripts/` run in its interpreter (only what the reference documents is imported there;
the result is the last line's JSON).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from mlc_farm.errors import LibraryLoadError, ToolchainError
from mlc_farm.toolchain.process import clean_line, dies_with_parent, run_captured, tool_error, toolchain_env, tracked

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_pool: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlc_farm_pool", default=None)


@contextlib.contextmanager
def on_pool(pool: str | None) -> Iterator[None]:
    """Toolchain steps in this block are those of `pool` (its MLC_FARM_POOL_MLC_LLM command, if it has one)."""
    token = _pool.set(pool)
    try:
        yield
    finally:
        _pool.reset(token)


def _configured() -> tuple[dict[str, str], list[str]]:
    """The current pool's mlc_llm command (MLC_FARM_POOL_MLC_LLM), else MLC_FARM_MLC_LLM, else this Python's:
    the `NAME=value` words before it (as in a shell: `PYTHONPATH=/opt/x /opt/mlc/bin/python -m mlc_llm`) are
    the environment its steps and scripts run with, the rest its command line."""
    from mlc_farm.settings import load_settings

    settings = load_settings()
    configured = settings.pool_mlc_llm.get(_pool.get() or "") or settings.mlc_llm
    words = shlex.split(configured) if configured else [sys.executable, "-m", "mlc_llm"]
    env: dict[str, str] = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def command() -> list[str]:
    """The `mlc_llm` command line prefix (see `_configured`)."""
    return _configured()[1]


def command_env() -> dict[str, str]:
    """The environment the configured command sets for the toolchain (see `_configured`)."""
    return _configured()[0]


def _interpreter(cmd: list[str]) -> str | None:
    """The Python that runs `cmd`, to probe versions with: `X -m mlc_llm` or a script's shebang."""
    if len(cmd) >= 3 and cmd[1] == "-m":
        return cmd[0]
    script = Path(cmd[0]) if os.sep in cmd[0] else None
    if script is None:
        found = shutil.which(cmd[0])
        script = Path(found) if found else None
    if script and script.is_file():
        first = script.open("rb").readline().decode(errors="replace")
        if first.startswith("#!"):
            return first[2:].strip().split()[0]
    return None


def interpreter() -> str | None:
    """The toolchain's Python, where the probe and library validation run (they import its mlc_llm and TVM)."""
    return _interpreter(command())


def _stream(
    proc: subprocess.Popen[bytes], log: IO[str], tail: deque[str], on_line: Callable[[str], None] | None
) -> None:
    """A step's output, cleaned, line by line into its log, the tail kept for its error and `on_line`."""
    assert proc.stdout is not None
    for raw in proc.stdout:  # binary: split on \n only, so progress redraws stay within their line
        line = clean_line(raw.decode(errors="replace"))
        if line is None:
            continue
        log.write(line + "\n")
        tail.append(line)
        if on_line:
            on_line(line)


def run(
    step: str,
    args: list[str],
    *,
    cell: str,
    log_path: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = 30,
) -> float:
    """Run one `mlc_llm` step, streaming its output to `on_line` and `log_path`; return seconds taken.

    The step runs in its own process group so a timeout kills compilers it started too.
    """
    full = [*command(), *args]
    tail: deque[str] = deque(maxlen=tail_lines)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(full)}\n")
        log.flush()
        try:
            if shutil.which(full[0]) is None:  # say so here: behind setpriv it would be setpriv's exit code
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), full[0])
            proc = subprocess.Popen(
                dies_with_parent(full),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=toolchain_env({**command_env(), **(env or {})}),
                start_new_session=True,
            )
        except OSError as e:
            raise ToolchainError(step, cell, f"cannot start {full[0]!r}: {e.strerror}", [], log_path) from e
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            with tracked(proc):
                _stream(proc, log, tail, on_line)
                code = proc.wait()
        finally:
            timer.cancel()
    if timed_out.is_set():
        raise ToolchainError(step, cell, f"timed out after {timeout:g} s and was killed", list(tail), log_path)
    if code != 0:
        said = tool_error(list(tail))
        raise ToolchainError(step, cell, f"exit code {code}" + (f": {said}" if said else ""), list(tail), log_path)
    return time.monotonic() - start


SCRIPTS = Path(__file__).parent / "scripts"


def in_toolchain(script: str, args: list[str], timeout: float, what: tuple[str, str]) -> dict[str, Any]:
    """Run `scripts/<script>` (after distributions.py) in the toolchain's interpreter; its last line's JSON.
    `what`: the task for messages, as a noun and as a verb (`loading the library`, `load the library`)."""
    python = interpreter()
    if python is None:
        raise LibraryLoadError(f"cannot tell which Python runs {' '.join(command())!r}")
    code = (SCRIPTS / "distributions.py").read_text() + "\n" + (SCRIPTS / script).read_text()
    try:
        done = run_captured([python, "-c", code, *args], timeout, command_env())
    except subprocess.TimeoutExpired:
        raise LibraryLoadError(f"{what[0]} took more than {timeout:g} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LibraryLoadError(f"the toolchain could not {what[1]}: {last}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
