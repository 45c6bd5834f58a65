"""What device code a compiled library holds, read from its bytes where it is built, with no GPU
(shared/mlc-reference, "CUDA libraries on a real NVIDIA GPU").

A CUDA library compiled where the driver's `libcuda.so.1` loads embeds a fat binary (little-endian magic
`0xBA55ED50`) whose images are ELF files with `e_machine` 190 (EM_CUDA), the SM architecture in bits 8-15 of
`e_flags` (`0x6005a04`: sm_90). One compiled without the driver embeds the CUDA *source* instead (`extern "C"
__global__ ...`), which only a TVM with its compiler side and NVRTC can load: the compile output does not say
which kind was made, so the farm reads the library.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from mlc_farm.toolchain.capabilities import arch_number

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
EM_CUDA = 190
_SOURCE = re.compile(rb'extern\s+"C"\s+__global__')


@dataclass(frozen=True)
class CudaCode:
    """The SM architectures of a library's CUDA images (`90`, as cuda_archs say them), and whether it holds CUDA
    source (compiled when loaded, with NVRTC)."""

    archs: list[str]
    source: bool


def _images(data: bytes, start: int, end: int) -> list[int]:
    """The SM architectures of the EM_CUDA ELF images in data[start:end]."""
    found = []
    at = data.find(b"\x7fELF", start, end)
    while at != -1 and at + 64 <= len(data):
        elf_class = data[at + 4]
        (machine,) = struct.unpack_from("<H", data, at + 18)
        flags_at = at + (48 if elf_class == 2 else 36)
        if machine == EM_CUDA:
            (flags,) = struct.unpack_from("<I", data, flags_at)
            found.append((flags >> 8) & 0xFF)
        at = data.find(b"\x7fELF", at + 4, end)
    return found


def cuda_code(data: bytes) -> CudaCode:
    """Every fat binary of a library (header: magic, version, header size, fat size), the images in each."""
    archs: set[int] = set()
    at = data.find(FATBIN_MAGIC)
    while at != -1 and at + 16 <= len(data):
        header, size = struct.unpack_from("<H", data, at + 6)[0], struct.unpack_from("<Q", data, at + 8)[0]
        end = min(len(data), at + header + size)
        archs.update(_images(data, at + header, end))
        at = data.find(FATBIN_MAGIC, max(end, at + 4))
    return CudaCode(archs=[str(a) for a in sorted(archs)], source=bool(_SOURCE.search(data)))


def cuda_problem(code: CudaCode, wanted: list[str]) -> str | None:
    """Why a CUDA library cannot ship: no binary at all (source only), or an architecture of `wanted` missing."""
    if not code.archs:
        kind = "the CUDA source only (compiled with NVRTC when loaded)" if code.source else "no CUDA code"
        return (
            f"the library holds {kind}, no device binary: a runtime-only TVM cannot load it. The pool's worker "
            "needs the NVIDIA driver library (libcuda.so.1) where it compiles, so that TVM compiles the kernels "
            "then (a GPU node, or the driver's libraries mounted in the image)"
        )
    held = {arch_number(a) for a in code.archs}  # 90a counts as 90: the images' flags hold the SM number
    if missing := [a for a in wanted if arch_number(a) not in held]:
        return (
            f"the library holds sm_{', sm_'.join(code.archs)} but not sm_{', sm_'.join(missing)} of its cuda_archs "
            "(or the target's arch): a GPU of that architecture fails with CUDA_ERROR_NO_BINARY_FOR_GPU"
        )
    return None


def runs_on(image: str, gpu: str) -> bool:
    """Whether a CUDA image of architecture `image` runs on a GPU of compute capability `gpu` (both as cuda_archs
    say them: 80, 86, 90a). NVIDIA's binary compatibility: a cubin runs on GPUs of its major version with an equal
    or higher minor one (sm_80 on an 8.6 GPU); an architecture-specific one (90a) only on its own."""
    i, g = arch_number(image), arch_number(gpu)
    if image.endswith("a"):
        return i == g
    return i // 10 == g // 10 and i % 10 <= g % 10


def held(archs: list[str]) -> str:
    """`sm_80, sm_90`: architectures as a user reads them."""
    return ", ".join(f"sm_{a}" for a in archs)
