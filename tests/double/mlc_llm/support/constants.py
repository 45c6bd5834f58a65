"""Double of `mlc_llm.support.constants`: the cache root and the policies, read from the environment once."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _home() -> Path:
    if os.environ.get("MLC_LLM_HOME"):
        return Path(os.environ["MLC_LLM_HOME"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "mlc_llm"
    return Path.home() / ".cache" / "mlc_llm"


MLC_LLM_HOME = _home()
MLC_JIT_POLICY = os.environ.get("MLC_JIT_POLICY", "ON")
MLC_DOWNLOAD_CACHE_POLICY = os.environ.get("MLC_DOWNLOAD_CACHE_POLICY", "ON")
MLC_LLM_READONLY_WEIGHT_CACHE = [Path(p) for p in os.environ.get("MLC_LLM_READONLY_WEIGHT_CACHE", "").split(
    os.pathsep) if p]  # fmt: skip
MLC_DSO_SUFFIX = {"darwin": "dylib", "win32": "dll"}.get(sys.platform, "so")
