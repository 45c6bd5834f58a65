"""Run a script of `in_toolchain/` in the toolchain's own interpreter (the library's run, the reference's
logits, a JIT key): only what the reference documents is imported there, and the result is its last line's
JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from mlc_farm import toolchain
from mlc_farm.errors import LibraryLoadError

_SCRIPTS = Path(__file__).parent / "in_toolchain"


def in_toolchain(script: str, args: list[str], timeout: float, what: tuple[str, str]) -> dict[str, Any]:
    """Run `in_toolchain/<script>` (after distributions.py) in the toolchain's interpreter; its last line's JSON.
    `what`: the task for messages, as a noun and as a verb (`loading the library`, `load the library`)."""
    python = toolchain.interpreter()
    if python is None:
        raise LibraryLoadError(f"cannot tell which Python runs {' '.join(toolchain.command())!r}")
    code = (_SCRIPTS / "distributions.py").read_text() + "\n" + (_SCRIPTS / script).read_text()
    try:
        done = toolchain.run_captured([python, "-c", code, *args], timeout)
    except subprocess.TimeoutExpired:
        raise LibraryLoadError(f"{what[0]} took more than {timeout:g} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise LibraryLoadError(f"the toolchain could not {what[1]}: {last}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result
