"""Where mlc_llm's own resolution looks for a model and its library (shared/mlc-reference, "How mlc_llm
itself finds a model and its library"): the cache root, the weights of an `HF://` name, and the JIT cache file
of a library, whose md5 only the toolchain's interpreter can compute (`toolchain/scripts/jit_key.py`)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlc_farm.devices import of_target
from mlc_farm.names import Md5
from mlc_farm.toolchain.invoke import in_toolchain
from mlc_farm.written import Written

SYSTEM_LIBRARY_DEVICES = ("iphone", "macabi", "android")  # JIT devices of system libraries: plain, no index
RECORDED_INDICES = range(8)  # the device indices whose keys a catalog entry lists (eight GPUs per machine)


class JitKey(Written):
    """A library's name in mlc_llm's JIT cache (`toolchain/jit.py` computes it the way mlc_llm does)."""

    md5: Md5  # a file name in mlc_llm's cache (install writes there)
    system_lib_prefix: str | None = None


def mlc_llm_home(env: Mapping[str, str] | None = None) -> Path:
    """mlc_llm's rule: MLC_LLM_HOME, else $XDG_CACHE_HOME/mlc_llm, else ~/.cache/mlc_llm."""
    env = os.environ if env is None else env
    if env.get("MLC_LLM_HOME"):
        return Path(env["MLC_LLM_HOME"])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "mlc_llm"
    return Path.home() / ".cache" / "mlc_llm"


def weights_dir(home: Path, repo: str) -> Path:
    """Where `HF://ORG/NAME` is looked up in the cache root (and, under `hf/`, in a read-only weight cache)."""
    return home / "model_weights" / "hf" / repo


def jit_device(target: str) -> str | None:
    """The JIT's device kind for a library target: `cuda`, `cpu`, ... (with `:INDEX` added), or the plain
    `iphone`, `macabi`, `android` of a system library; None for a target the JIT never serves (webgpu)."""
    if target in ("iphone", "macabi"):
        return target
    if target.startswith("android") or target == "mali":
        return "android"
    family = of_target(target)
    if family is None or family.runtime_device is None:
        return None
    return family.runtime_device


def device_strings(target: str, indices: range | list[int] = RECORDED_INDICES) -> list[str]:
    """The device strings the JIT keys a library of `target` under: `KIND:INDEX` (the CPU only `cpu:0`)."""
    kind = jit_device(target)
    if kind is None:
        return []
    if kind in SYSTEM_LIBRARY_DEVICES:
        return [kind]
    return [f"{kind}:{i}" for i in ([0] if kind == "cpu" else indices)]


def cache_file(home: Path, key: JitKey, device: str) -> Path:
    """`model_lib/<md5>.<so|dylib|dll>`, `.tar` for the system libraries of phones."""
    suffix = "tar" if device in SYSTEM_LIBRARY_DEVICES else {"darwin": "dylib", "win32": "dll"}.get(sys.platform, "so")
    return home / "model_lib" / f"{key.md5}.{suffix}"


def keys(
    chat_config: dict[str, Any],
    devices: list[str],
    overrides: dict[str, object] | None = None,
    opt: str | None = None,
    timeout: float = 300,
    present: tuple[Path, str] | None = None,
) -> dict[str, JitKey]:
    """The JIT keys of a model's mlc-chat-config.json (as read) for these device strings, computed in the
    toolchain's interpreter; by default those of the
    engine's defaults (no overrides, no opt), which is what `MLCEngine("HF://...")` and `mlc_llm chat` ask for.
    `present` (library, kind): instead of `devices`, every device of that kind this machine has."""
    if not devices and present is None:
        return {}
    with tempfile.TemporaryDirectory(prefix="mlc-farm-jit-") as tmp:
        request = Path(tmp) / "request.json"
        request.write_text(
            json.dumps(
                {
                    "config": chat_config,
                    "devices": devices,
                    "overrides": overrides or {},
                    "opt": opt,
                    "present": present and {"library": str(present[0]), "kind": present[1]},
                }
            )
        )
        out = in_toolchain("jit_key.py", [str(request)], timeout, ("computing the JIT key", "compute the JIT key"))
    return {d: JitKey.model_validate(k) for d, k in out["keys"].items()}
