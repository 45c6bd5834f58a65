"""Double of `mlc_llm.quantization`: the QUANTIZATION registry (name -> scheme), as the reference lists it."""

from __future__ import annotations

from types import SimpleNamespace

_NAMES = [
    "q0f16", "q0bf16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4bf16_0", "q4bf16_1",
    "q4f32_1", "q4f16_2", "q4f16_autoawq", "q4f16_ft", "e5m2_e5m2_f16", "e4m3_e4m3_f16",
    "e4m3_e4m3_f16_max_calibrate", "fp8_e4m3fn_bf16_block_scale",
    "fp8_e4m3fn_bf16_block_scale_static_activation",
]  # fmt: skip


def scheme(name: str) -> tuple[int, str]:
    """(bits, model dtype): 16/32 bits means no quantization."""
    dtype = "float32" if "f32" in name else "bfloat16" if "bf16" in name and name.startswith("q") else "float16"
    if name.startswith("q0"):
        return (32 if dtype == "float32" else 16), dtype
    if name.startswith(("q3", "q4")):
        return int(name[1]), dtype
    return 8, "float16"


QUANTIZATION = {n: SimpleNamespace(name=n, bits=scheme(n)[0], model_dtype=scheme(n)[1]) for n in _NAMES}
