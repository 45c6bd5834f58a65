"""Asking a toolchain what it is (`scripts/probe.py` in its interpreter): never raises, an unusable
toolchain is an answer with its error.
"""

from __future__ import annotations

import json
import shlex
import subprocess

from mlc_farm.matrix.schema import Accepted
from mlc_farm.toolchain.info import ToolchainInfo, of_pools
from mlc_farm.toolchain.invoke import SCRIPTS, command, command_env, interpreter, on_pool
from mlc_farm.toolchain.process import toolchain_env

INSTALL_HINT = (
    "the PyPI packages mlc-llm-nightly-* / mlc-ai-nightly-* are empty placeholders (they install a "
    "package named `mlc`, not `mlc_llm`). Install the real wheels from the MLC wheel index, e.g. "
    "`pip install --pre -f https://mlc.ai/wheels mlc-llm-nightly-cpu mlc-ai-nightly-cpu` "
    "(CUDA 12.8: mlc-llm-nightly-cu128 mlc-ai-nightly-cu128; ROCm 6.2: mlc-llm-nightly-rocm62 "
    "mlc-ai-nightly-rocm62), or point MLC_FARM_MLC_LLM at an interpreter that has them"
)


def probe_here(pools: list[str]) -> ToolchainInfo:
    """Every pool on this machine (embedded): each with its MLC_FARM_POOL_MLC_LLM command, else the default one;
    `pools[0]` is the run's (the weights pool)."""
    from mlc_farm.settings import load_settings

    configured = load_settings().pool_mlc_llm
    by_command: dict[str | None, ToolchainInfo] = {}  # pools that share a command share its probe
    found = {}
    for pool in pools:
        if (cmd := configured.get(pool)) not in by_command:
            with on_pool(pool):
                by_command[cmd] = probe()
        found[pool] = by_command[cmd]
    return of_pools(found, pools[0])


def probe(timeout: float = 120) -> ToolchainInfo:
    """Ask the toolchain's own interpreter which mlc_llm and TVM it has, and which names it accepts; never raises."""
    python = interpreter()
    if python is None:
        return ToolchainInfo(error=f"cannot tell which Python runs {shlex.join(command())!r}")
    try:
        done = subprocess.run(
            [python, "-c", (SCRIPTS / "probe.py").read_text()],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=toolchain_env(command_env()),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return ToolchainInfo(error=f"probe of {python} failed: {e}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ToolchainInfo(error=f"importing mlc_llm/tvm in {python} failed: {last}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    if data.get("error") == "missing":
        where = " (found the placeholder package `mlc`)" if data.get("placeholder") else ""
        return ToolchainInfo(error=f"mlc_llm is not importable by {python}{where}: {INSTALL_HINT}")
    names = data.pop("names", None)
    accepted = Accepted(**names, source=f"mlc_llm {data.get('mlc_llm_version', 'unknown')} (asked)") if names else None
    return ToolchainInfo(**data, names=accepted)
