"""What a library needs of the runtime that loads it, and whether a local runtime offers it. Pure.

mlc_llm's JIT cache key holds neither the mlc_llm/TVM version nor the GPU architecture (shared/mlc-reference):
a library built by another runtime is loaded anyway and fails inside TVM ("Cannot find global function ...",
a VM version check, a wrong argument count). So every library records the toolchain that compiled it and what
its device must offer, and `install`, `validate --dir` and `pull --check-runtime` compare that with the local
toolchain's probe before anything is loaded.
"""

from __future__ import annotations

import json
import platform
import re
from typing import Any

from pydantic import Field

from mlc_farm.checks.device_code import held, runs_on
from mlc_farm.devices import of_target
from mlc_farm.errors import BadInput, RuntimeMismatch
from mlc_farm.matrix.schema import DeviceSpec
from mlc_farm.toolchain.info import ToolchainInfo
from mlc_farm.written import Written


class Needs(Written):
    """What the machine that runs the library must offer."""

    device: str  # mlc_llm's `--device` kind: cuda, rocm, vulkan, metal, cpu, webgpu, ...
    # The SM architectures of the library's CUDA images (read from it, mlc_farm/checks/device_code.py), else those its
    # cuda_archs or target's `arch` asked for (a record from before the check), as cuda_archs say them (86).
    cuda_archs: list[str] = Field(default_factory=list)
    rocm_mcpu: str | None = None
    features: list[str] = Field(default_factory=list)  # e.g. shader-f16 for a WebGPU f16 build
    host: str  # the host triple the CPU part was compiled for


class LibRuntime(Written):
    """The runtime a library was compiled with, and what it needs of the device."""

    mlc_llm_version: str
    mlc_llm_commit: str
    tvm_version: str
    tvm_commit: str
    needs: Needs

    def describe(self) -> str:
        return f"mlc_llm {self.mlc_llm_version} ({self.mlc_llm_commit[:12]}), tvm {self.tvm_version}"

    def describe_all(self) -> str:
        """The runtime and the device binaries it holds: what the card and the page say a library needs."""
        archs = self.needs.cuda_archs
        return self.describe() + (f"; CUDA binaries {held(archs)}" if archs else "")


def _target_field(target: str, field: str) -> str | None:
    """A field of a TVM target given as JSON (`{"kind": "cuda", "arch": "sm_86"}`) or as text (`-arch=sm_86`)."""
    if target.startswith("{"):
        try:
            value = json.loads(target).get(field)
        except (ValueError, AttributeError):
            return None
        return str(value) if value else None
    found = re.search(rf"-{field}=(\S+)", target)
    return found.group(1) if found else None


def needs_of(device: DeviceSpec, quantization: str) -> Needs:
    family = of_target(device.target)
    kind = family.mlc_device if family else "cpu"
    archs = list(device.cuda_archs)
    if kind == "cuda" and not archs and (arch := _target_field(device.target, "arch")):
        archs = [arch.removeprefix("sm_")]  # as cuda_archs say them: 86, 90a
    features = ["shader-f16"] if kind == "webgpu" and "f16" in quantization else []
    return Needs(
        device=kind,
        cuda_archs=archs,
        rocm_mcpu=_target_field(device.target, "mcpu") if kind == "rocm" else None,
        features=features,
        host=device.host_triple,
    )


def of_library(
    toolchain: dict[str, Any], device: DeviceSpec, quantization: str, found_archs: list[str] | None = None
) -> LibRuntime | None:
    """The runtime of a library from its build record's toolchain; None when the record does not say.
    `found_archs`: the CUDA architectures read from the library itself (its record), which win over those the
    matrix asked for."""
    fields = ("mlc_llm_version", "mlc_llm_commit", "tvm_version", "tvm_commit")
    if not all(toolchain.get(f) for f in fields):
        return None
    needs = needs_of(device, quantization)
    if found_archs:
        needs = needs.model_copy(update={"cuda_archs": found_archs})
    return LibRuntime(**{f: toolchain[f] for f in fields}, needs=needs)


def same_runtime(lib: LibRuntime, local: ToolchainInfo) -> bool:
    """Whether a local toolchain (its probe) is the one the library was compiled with: the commits when both
    sides know them, else the versions."""
    for version, commit in (("mlc_llm_version", "mlc_llm_commit"), ("tvm_version", "tvm_commit")):
        ours, theirs = getattr(lib, commit), getattr(local, commit)
        if "unknown" not in (ours, theirs):
            if ours != theirs:
                return False
        elif getattr(lib, version) != getattr(local, version):
            return False
    return True


_ARCH = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}
_OWN_HOST = ("webgpu",)  # libraries whose host part is not this machine's CPU (phones are never loaded here)


def _arch(name: str) -> str:
    return _ARCH.get(name.lower(), name.lower())


def mismatch(
    lib: LibRuntime, local: ToolchainInfo, local_gpu_archs: list[str] | None = None, machine: str | None = None
) -> str | None:
    """One line saying why this runtime cannot load the library, naming both sides and what to do; None when
    it can. `local_gpu_archs`: the local CUDA GPUs' architectures (86), when known; `machine`: this CPU
    (`platform.machine()`), which the library's host part must be compiled for."""
    if not same_runtime(lib, local):
        here = f"mlc_llm {local.mlc_llm_version} ({local.mlc_llm_commit[:12]}), tvm {local.tvm_version}"
        return (
            f"built with {lib.describe()}; this runtime is {here}: install the runtime the library was built with, "
            "or take a build made for yours (`mlc-farm ls` shows each library's runtime)"
        )
    host = _arch(lib.needs.host.split("-")[0])
    if machine and lib.needs.device not in _OWN_HOST and host != _arch(machine):
        return (
            f"its host part was compiled for {lib.needs.host}; this machine is {machine}: take a build whose host "
            "is yours"
        )
    if not arch_runs(lib, local_gpu_archs):
        gpus = (
            f"this GPU is {held(local_gpu_archs or [])}"
            if len(local_gpu_archs or []) == 1
            else (f"these GPUs are {held(local_gpu_archs or [])}")
        )
        return f"library holds {held(lib.needs.cuda_archs)}; {gpus}: take a build whose cuda_archs include yours"
    return None


def arch_runs(lib: LibRuntime, local_gpu_archs: list[str] | None) -> bool:
    """Whether one of the library's CUDA images runs on one of the local GPUs (True when either is unknown)."""
    archs = lib.needs.cuda_archs
    return not archs or not local_gpu_archs or any(runs_on(a, g) for a in archs for g in local_gpu_archs)


def matches(lib: LibRuntime | None, wanted: str) -> bool:
    """Whether a library was built by the runtime `--runtime` names: an mlc_llm version, or 7+ hex digits of its
    commit."""
    if lib is None:
        return False
    return wanted == lib.mlc_llm_version or (len(wanted) >= 7 and lib.mlc_llm_commit.startswith(wanted))


def built_with(libs: dict[str, LibRuntime | None], wanted: str, what: str) -> list[str]:
    """The devices whose library `wanted` built; BadInput naming the runtimes there are when none."""
    found = [d for d, lib in sorted(libs.items()) if matches(lib, wanted)]
    if not found:
        there = sorted({f"{lib.mlc_llm_version} ({lib.mlc_llm_commit[:12]})" for lib in libs.values() if lib})
        raise BadInput(
            f"--runtime {wanted}: no library of {what} was built with it; built with: "
            f"{', '.join(there) or 'unrecorded runtimes'}"
        )
    return found


def refuse_mismatched(
    libs: dict[str, LibRuntime | None], local: ToolchainInfo, gpu_archs: list[str] | None = None
) -> None:
    """RuntimeMismatch, in one line, for the first library (by device name) this runtime cannot load."""
    if not local.known:
        raise RuntimeMismatch(f"cannot tell which runtime is here: {local.error}")
    for name, lib in sorted(libs.items()):
        if lib is None:
            raise RuntimeMismatch(
                f"{name}: the catalog does not say which runtime built this library (built before runtimes were "
                "recorded): rebuild it, or --any-runtime"
            )
        if why := mismatch(lib, local, gpu_archs, platform.machine()):
            raise RuntimeMismatch(f"{name}: {why}")
