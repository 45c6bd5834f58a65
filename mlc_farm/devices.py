"""One record per device family: everything the farm knows about a family, in one place.

A new family is one record here plus its infra files (a pool template per pool type in
`mlc_farm/farm/templates/`, a deployment in prefect.yaml, an image and Helm values if it needs its own workers).
Everything else (the matrix's checks, library names, validation, the model card, the exports, farm pools)
reads from this table. The facts come from shared/mlc-reference: `compile --device` presets and local
devices, TVM target kinds, and the library kind `compile -o` writes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GENERIC_HOST = "x86_64-unknown-linux-gnu"
_VULKAN_ICDS = ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d")


def _no_nvidia() -> str | None:
    present = Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi")
    return None if present else "no cuda device (no NVIDIA driver)"


def _no_kfd() -> str | None:
    return None if Path("/dev/kfd").exists() else "no rocm device (no /dev/kfd)"


def _no_vulkan() -> str | None:
    """No Vulkan driver: where the Vulkan loader looks (VK_DRIVER_FILES or VK_ICD_FILENAMES when set, else the
    ICD directories). A driver only says the device may be there: whether the toolchain's runtime can use it
    is its own answer (toolchain/scripts/run_library.py)."""
    named = os.environ.get("VK_DRIVER_FILES") or os.environ.get("VK_ICD_FILENAMES")
    places = [Path(p) for p in named.split(os.pathsep) if p] if named else [Path(d) for d in _VULKAN_ICDS]
    found = any(p.is_file() or (p.is_dir() and any(p.glob("*.json"))) for p in places)
    return None if found else "no vulkan device (no Vulkan driver ICD)"


def _not_macos() -> str | None:
    return None if sys.platform == "darwin" else "no metal device (not macOS)"


def _always() -> str | None:
    return None


@dataclass(frozen=True)
class Family:
    """A device family.

    - `lib_ext`: the library file `compile -o` writes for it.
    - `targets`: the `compile --device` values (presets and local devices) that build for it.
    - `target_kinds`: the TVM target kinds (a JSON target's `kind`, a string target's head) that build for it.
    - `default_host`: `compile --host` unless a device sets `host`.
    - `runtime_device`: the TVM device its libraries run on in a worker (None: never on a worker).
    - `absent`: why that device is not on this machine (None: it is).
    - `mlc_device`: what a user passes to `mlc_llm chat/serve --device` for its libraries.
    - `convert_on`: it can be `convert_weight --device`.
    - `pool_template`: the base job template of its work pools (`mlc_farm/farm/templates/<type>-<template>.json`).
    - `exports`: the runtimes whose exports list its libraries (`webllm`, `app`).
    - `compile_needs`: what compiling for it needs on the pool beyond the wheel (mlc_farm/toolchain/capabilities.py).
    """

    name: str
    lib_ext: str
    targets: tuple[str, ...]
    target_kinds: tuple[str, ...] = ()
    default_host: str = GENERIC_HOST
    runtime_device: str | None = None
    absent: Callable[[], str | None] = _always
    mlc_device: str = ""
    convert_on: bool = False
    pool_template: str = "cpu"
    exports: tuple[str, ...] = ()
    compile_needs: tuple[str, ...] = ()

    def missing_here(self) -> str | None:
        """Why a library of this family cannot run on this machine, or None when it can."""
        if self.runtime_device is None:
            return f"no {self.name} device here"
        return self.absent()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("cuda", "so", ("cuda",), ("cuda",), runtime_device="cuda", absent=_no_nvidia, mlc_device="cuda",
               convert_on=True, pool_template="cuda"),
        Family("rocm", "so", ("rocm",), ("rocm",), runtime_device="rocm", absent=_no_kfd, mlc_device="rocm",
               convert_on=True, pool_template="rocm", compile_needs=("the ROCm toolchain",)),
        Family("vulkan", "so", ("vulkan", "vulkan:generic"), ("vulkan",), runtime_device="vulkan",
               absent=_no_vulkan, mlc_device="vulkan", convert_on=True),
        Family("metal", "dylib", ("metal", "metal:generic", "metal:x86-64"), ("metal",),
               default_host="arm64-apple-darwin", runtime_device="metal", absent=_not_macos, mlc_device="metal",
               convert_on=True, compile_needs=("xcrun metal",)),
        Family("opencl", "so", ("opencl", "opencl:generic", "windows:adreno_x86"), ("opencl",),
               mlc_device="opencl", convert_on=True),
        Family("webgpu", "wasm", ("webgpu",), ("webgpu",), mlc_device="webgpu", exports=("webllm",),
               compile_needs=("emcc", "mlc_wasm_runtime.bc")),
        Family("cpu", "so", ("llvm", "cpu", "c"), ("llvm", "c"), runtime_device="cpu", mlc_device="cpu",
               convert_on=True),
        Family("android", "tar", ("android", "android:adreno", "android:adreno-so", "mali"), mlc_device="opencl",
               exports=("app",)),
        Family("iphone", "tar", ("iphone", "macabi"), mlc_device="metal", exports=("app",),
               compile_needs=("xcrun metal",)),
    )
}  # fmt: skip


def family(name: str) -> Family:
    return FAMILIES[name]


def of_target(target: str) -> Family | None:
    """The family a `compile --device` value builds for: a preset or local device (`cuda`, `cuda:0`), a TVM
    target as JSON (`{"kind": "cuda", ...}`) or as a string (`cuda -arch=sm_80`); None when no family builds
    for it."""
    for f in FAMILIES.values():
        if target in f.targets:
            return f
    if target.startswith("{"):
        try:
            kind = json.loads(target).get("kind")
        except (ValueError, AttributeError):
            return None
    else:
        kind = target.split(":")[0] if re.fullmatch(r"[a-z]+:[0-9]+", target) else target.split(" ")[0]
    return next((f for f in FAMILIES.values() if kind in f.target_kinds), None)


def runs_here(target: str) -> bool:
    """Whether a library of `target` can run on this machine (its family's device is present)."""
    found = of_target(target)
    return found is not None and found.missing_here() is None


def target_family(target: str) -> str | None:
    """The name of the family `target` builds for, or None."""
    found = of_target(target)
    return found.name if found else None


def local_gpu_archs() -> list[str] | None:
    """The local NVIDIA GPUs' architectures as the matrix's `cuda_archs` say them (`86`), from nvidia-smi; None
    when it cannot tell."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    archs = sorted({line.strip().replace(".", "") for line in out.splitlines() if line.strip()})
    return archs or None
