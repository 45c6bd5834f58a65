"""How much device memory a library needs to run its weights (the reference's "Memory" facts):

    weights  = ParamBytes of tensor-cache.json
    temp     = the largest temporary buffer in the library metadata's `memory_usage` (what prefill needs)
    kv cache = 2 x layers x kv_heads x head_dim x context window x bytes per element (one sequence)
    total    = weights + temp + kv cache

The context window is the library's `context_window_size` (its `sliding_window_size` when that is -1), and
a KV element takes the bytes of the quantization's float type (f16: 2, f32: 4). What app configs of the MLC
ecosystem ask for: `vram_required_MB` (WebLLM), `estimated_vram_bytes` (iOS/Android).
"""

from __future__ import annotations

import re
from typing import Any

from mlc_farm.formatting import size
from mlc_farm.written import Written

MB = 1024 * 1024


class MemoryEstimate(Written):
    weights_bytes: int
    temp_bytes: int
    kv_cache_bytes: int
    context_window: int
    # A library that cannot be loaded here (a .wasm, a phone's .tar) borrows the estimate of another device's
    # library of the same weights and architecture: the same weights and KV cache, similar temporary buffers.
    borrowed_from: str | None = None

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.temp_bytes + self.kv_cache_bytes

    @property
    def total_mb(self) -> float:
        return self.total_bytes / MB

    def describe(self) -> str:
        return (
            f"{size(self.total_bytes)} (parameters {size(self.weights_bytes)} + temporary {size(self.temp_bytes)}"
            f" + KV cache {size(self.kv_cache_bytes)} for {self.context_window:,} tokens"
            + (f"; as the {self.borrowed_from} library" if self.borrowed_from else "")
            + ")"
        )


def kv_bytes_per_element(quantization: str) -> int:
    """q4f16_1 -> 2 (f16), q4f32_1 / q0f32 -> 4: the activations' float type, which the KV cache holds."""
    m = re.match(r"^q\d+f(\d+)", quantization)
    return int(m.group(1)) // 8 if m else 2


def estimate(tensor_cache: dict[str, Any], metadata: dict[str, Any]) -> MemoryEstimate | None:
    """The estimate from a convert build's tensor-cache.json and a library's metadata; None when either lacks
    what it needs (a library that could not be loaded where it was built has no metadata)."""
    try:
        weights = int(tensor_cache["metadata"]["ParamBytes"])
        kv = metadata["kv_cache"]
        window = int(metadata.get("context_window_size", -1))
        if window <= 0:
            window = int(metadata.get("sliding_window_size", -1))
        per_token = 2 * int(kv["num_hidden_layers"]) * int(kv["num_key_value_heads"]) * int(kv["head_dim"])
        temp = max((int(v) for v in metadata.get("memory_usage", {}).values()), default=0)
        element = kv_bytes_per_element(str(metadata.get("quantization", "")))
    except (KeyError, TypeError, ValueError):
        return None
    if window <= 0:
        return None
    return MemoryEstimate(
        weights_bytes=weights, temp_bytes=temp, kv_cache_bytes=per_token * window * element, context_window=window
    )
