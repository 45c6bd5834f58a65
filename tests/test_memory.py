"""The memory estimate, from the real sample library metadata and tensor-cache of the reference."""

from __future__ import annotations

import json
from pathlib import Path

from mlc_farm.checks.memory import estimate, kv_bytes_per_element

SAMPLE = Path(__file__).parent / "fixtures" / "mlc-reference" / "sample-library-q4f16_1"


def test_the_estimate_of_the_real_sample() -> None:
    metadata = json.loads((SAMPLE / "metadata.json").read_text())
    cache = json.loads((SAMPLE / "weights-tensor-cache.json").read_text())
    got = estimate(cache, metadata)
    assert got is not None
    assert got.weights_bytes == 329_600  # ParamBytes
    assert got.temp_bytes == 1_310_720  # the largest memory_usage: batch_prefill_to_last_hidden_states & co
    # 2 x 2 layers x 2 KV heads x 64 head_dim x 512 tokens x 2 bytes (f16)
    assert got.context_window == 512 and got.kv_cache_bytes == 2 * 2 * 2 * 64 * 512 * 2
    assert got.total_bytes == 329_600 + 1_310_720 + 524_288
    assert got.describe() == "2.1 MB (parameters 321.9 KB + temporary 1.2 MB + KV cache 512.0 KB for 512 tokens)"


def test_what_is_missing_gives_no_estimate() -> None:
    metadata = json.loads((SAMPLE / "metadata.json").read_text())
    assert estimate({}, metadata) is None
    assert estimate({"metadata": {"ParamBytes": 1}}, {**metadata, "kv_cache": {}}) is None
    assert (
        estimate({"metadata": {"ParamBytes": 1}}, {**metadata, "context_window_size": -1, "sliding_window_size": -1})
        is None
    )
    sliding = estimate(
        {"metadata": {"ParamBytes": 1}}, {**metadata, "context_window_size": -1, "sliding_window_size": 4096}
    )
    assert sliding is not None and sliding.context_window == 4096
    assert [kv_bytes_per_element(q) for q in ("q4f16_1", "q4f32_1", "q0f32", "q0f16", "odd")] == [2, 4, 4, 2, 2]
