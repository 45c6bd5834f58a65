"""What a pool can compile, and what each target needs of it (shared/mlc-reference, "What each target needs on
the machine that compiles"). Pure: the probe (`toolchain/scripts/probe.py`, in the toolchain's interpreter and
environment) finds the tools; here a device is checked against them before anything runs."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel

from mlc_farm.devices import of_target
from mlc_farm.matrix.schema import DeviceSpec


class Capabilities(BaseModel):
    """The compilers and runtime pieces found where a pool's builds run."""

    emcc: str | None = None  # `emcc --version`'s first line
    wasm_runtime: str | None = None  # where mlc_wasm_runtime.bc was found (./web/dist/wasm, $MLC_LLM_SOURCE_DIR)
    xcrun_metal: str | None = None  # `xcrun -f metal` (macOS with Xcode)
    ndk_cc: str | None = None  # TVM_NDK_CC, when it names a compiler that exists
    nvcc: str | None = None  # `nvcc --version`'s release line
    nvcc_archs: list[str] = []  # what it can target (`nvcc --list-gpu-arch`), as cuda_archs say them: 80, 90a
    rocm: str | None = None  # the ROCm version (/opt/rocm/.info/version, or hipcc)
    # What the pool's TVM can offload to (libinfo's USE_CUBLAS, USE_CUTLASS, USE_FLASHINFER or the flashinfer
    # package), by `--opt` flag name; None: not known (no toolchain probed).
    offload: dict[str, bool] | None = None

    def lines(self) -> list[str]:
        """One line per tool, found or not: for `mlc-farm toolchain`, `plan --explain` and the image's start."""
        archs = f" ({_span(self.nvcc_archs)})" if self.nvcc_archs else ""
        return [
            f"emcc: {self.emcc or 'not found'}",
            f"mlc_wasm_runtime.bc: {self.wasm_runtime or 'not found'}",
            f"xcrun metal: {self.xcrun_metal or 'not found'}",
            f"TVM_NDK_CC: {self.ndk_cc or 'not set'}",
            f"nvcc: {self.nvcc or 'not found'}{archs}",
            f"ROCm: {self.rocm or 'not found'}",
            "offload: "
            + (
                ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in sorted(self.offload.items()))
                if self.offload is not None
                else "not known"
            ),
        ]


def _span(archs: list[str]) -> str:
    ordered = sorted(archs, key=arch_number)
    return f"{ordered[0]} to {ordered[-1]}" if len(ordered) > 1 else ordered[0]


def arch_number(arch: str) -> int:
    """A CUDA architecture's number without its feature suffix (90a -> 90): what orders and matches them."""
    digits = re.sub(r"\D", "", arch)
    return int(digits) if digits else 0


def _missing(need: str, caps: Capabilities) -> str | None:
    """Why `need` is not met on a pool with `caps` (None: it is)."""
    found = {
        "emcc": caps.emcc,
        "mlc_wasm_runtime.bc": caps.wasm_runtime,
        "xcrun metal": caps.xcrun_metal,
        "TVM_NDK_CC": caps.ndk_cc,
        "nvcc": caps.nvcc,
        "the ROCm toolchain": caps.rocm,
    }[need]
    if found:
        return None
    return f"{need} not set" if need == "TVM_NDK_CC" else f"{need} not found"


def needs(device: DeviceSpec) -> list[str]:
    """What compiling this device's target needs beyond the wheel: its family's and its preset's, and nvcc
    for a fat CUDA binary (`cuda_archs`)."""
    family = of_target(device.target)
    found = list(family.compile_needs) if family else []
    found += [n for n in PRESET_NEEDS.get(device.target, ()) if n not in found]
    if device.cuda_archs and "nvcc" not in found:
        found.append("nvcc")
    return found


# Presets whose needs go beyond their family's (android's own `.tar` needs nothing more).
PRESET_NEEDS: dict[str, tuple[str, ...]] = {"android:adreno-so": ("TVM_NDK_CC",)}


def problem(device: DeviceSpec, pool: str, caps: Capabilities) -> str | None:
    """Why `pool` cannot build `device`, in one line naming the device, its pool, its target and what is
    missing; None when it can."""
    wanted = needs(device)
    missing = [m for n in wanted if (m := _missing(n, caps))]
    if missing:
        return (
            f"device {device.name}: target {device.target} needs {' and '.join(wanted)} on pool {pool}; "
            f"{', '.join(missing)}"
        )
    # `nvcc --list-gpu-arch` names the base architectures (90); 90a and 100f are their feature variants.
    bases = {arch_number(a) for a in caps.nvcc_archs}
    beyond = [a for a in device.cuda_archs if caps.nvcc_archs and arch_number(a) not in bases]
    if beyond:
        return (
            f"device {device.name}: cuda_archs {', '.join(beyond)} are beyond {caps.nvcc} on pool {pool}, which "
            f"targets {_span(caps.nvcc_archs)}"
        )
    return None


# The --opt flags that offload to a library TVM may be built without (shared/mlc-reference, "CUDA libraries on a
# real NVIDIA GPU"), and the unquantized builds for which the default --opt turns cublas_gemm on.
OFFLOAD_FLAGS = {"cublas_gemm": "cublas", "cutlass": "cutlass", "flashinfer": "flashinfer"}
LIBRARY = {"cublas": "cuBLAS (USE_CUBLAS)", "cutlass": "CUTLASS (USE_CUTLASS)", "flashinfer": "FlashInfer"}
UNQUANTIZED = ("q0f16", "q0bf16", "q0f32")


def offload_needs(device: DeviceSpec, quantization: str) -> list[str]:
    """The `--opt` flags of a CUDA compile that need a library the pool's TVM may lack: those the device's opt
    turns on, and cublas_gemm for an unquantized build at a default opt (O2, O3, or none given)."""
    family = of_target(device.target)
    if family is None or family.mlc_device != "cuda":
        return []
    opt = device.opt or ""
    flags = dict(item.split("=", 1) for item in opt.split(";") if "=" in item)
    wanted = [f for f in OFFLOAD_FLAGS if flags.get(f) == "1"]
    default = opt in ("", "O2", "O3")
    if default and quantization in UNQUANTIZED and "cublas_gemm" not in wanted:
        wanted.append("cublas_gemm")
    return wanted


def offload_problem(device: DeviceSpec, quantization: str, pool: str, caps: Capabilities) -> str | None:
    """Why `pool` cannot compile this device x quantization with its opt: a flag whose library its TVM lacks, and
    the flags that would build it."""
    if caps.offload is None:
        return None
    lacking = [f for f in offload_needs(device, quantization) if not caps.offload.get(OFFLOAD_FLAGS[f], False)]
    if not lacking:
        return None
    what = ", ".join(LIBRARY[OFFLOAD_FLAGS[f]] for f in lacking)
    how = ";".join(f"{f}=0" for f in lacking)
    return (
        f"device {device.name} ({quantization}): its opt ({device.opt or 'the default, O2'}) compiles with "
        f"{', '.join(lacking)}, and pool {pool}'s TVM has no {what}: give the device opt: '{how}' (or run it "
        "on a pool whose TVM has it)"
    )


def tools(device: DeviceSpec, caps: Capabilities) -> dict[str, str]:
    """The versions of the compilers that build this device's library beyond the wheel (emcc, nvcc): part of
    the library's inputs, so a new compiler on the pool rebuilds it and its record names it."""
    wanted = needs(device)
    found = {"emcc": caps.emcc, "nvcc": caps.nvcc}
    return {n: v for n, v in found.items() if n in wanted and v}


def problems(devices: list[DeviceSpec], caps_of: Callable[[str], Capabilities]) -> list[str]:
    """Every device a pool cannot build (`caps_of(pool)`: what the pool has), one line each."""
    return [p for d in devices if (p := problem(d, d.work_pool, caps_of(d.work_pool)))]
