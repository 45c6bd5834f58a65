"""How long each build of a plan is expected to take, from the store's records of earlier builds: the critical
path the scheduler orders builds by.

- The same build before (same inputs but the toolchain: a nightly upgrade): its time.
- Else the same step of the same source (another quantization), scaled by the weight bytes of each.
- Else the step's rate over similar builds (seconds per weight byte, per quantization when known), times
  this build's weight bytes (parameters from config.json x bits per weight of the quantization).
- A library: the compile time of the same architecture and target, else the median of that target, else of
  every library. Nothing known at all: a default per step.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from mlc_farm.digests import digest
from mlc_farm.planning.keys import across_toolchains
from mlc_farm.planning.plan import ConfigBuild, ConvertBuild, LibBuild, Plan
from mlc_farm.records.schema import BuildRecord, ConfigRecord, ConvertRecord

DEFAULT_SECONDS = {"convert": 1800.0, "config": 30.0, "library": 600.0}


def wall_seconds(record: BuildRecord) -> float:
    return max((record.finished_at - record.started_at).total_seconds(), 0.0)


def parameters(config: dict[str, Any] | None) -> float | None:
    """Parameters of a decoder from its Hugging Face config (embeddings, attention, MLP), or None if unknown."""
    if not config:
        return None
    try:
        h, layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
        inter = int(config.get("intermediate_size") or 4 * h)
        heads = int(config.get("num_attention_heads") or 1)
        kv = int(config.get("num_key_value_heads") or heads)
    except (KeyError, TypeError, ValueError):
        return None
    head_dim = h // max(heads, 1)
    attention = 2 * h * h + 2 * h * kv * head_dim
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings") else 2)
    return float(embeddings + layers * (attention + 3 * h * inter))


def bits_per_weight(quantization: str) -> float:
    """q4f16_1 -> 4, q0f16 -> 16, q0f32 -> 32, q3f16_1 -> 3 (the MLC naming: qBITS then the float type)."""
    m = re.match(r"^q(\d+)f(\d+)", quantization)
    if not m:
        return 16.0
    bits, floats = int(m.group(1)), int(m.group(2))
    return float(bits or floats)


def _weight_bytes(params: float | None, quantization: str) -> float | None:
    return params * bits_per_weight(quantization) / 8 if params else None


def estimate(plan: Plan, records: Iterable[BuildRecord], configs: dict[str, dict[str, Any] | None]) -> dict[str, float]:
    """Expected seconds of every build of `plan`; `configs` is each model's config.json (None if unknown)."""
    records = list(records)
    by_inputs = {across_toolchains(r.inputs): wall_seconds(r) for r in records}
    weights = [r for r in records if r.kind in ("convert", "config")]
    out: dict[str, float] = {}

    def rate(kind: str, quantization: str) -> float | None:
        """Median seconds per output byte of this step (of this quantization when there are any)."""
        same = [r for r in weights if r.kind == kind and r.inputs.get("quantization") == quantization] or [
            r for r in weights if r.kind == kind
        ]
        rates = [wall_seconds(r) / r.size for r in same if r.size]
        return statistics.median(rates) if rates else None

    builds: list[ConvertBuild | ConfigBuild] = [*plan.convert_builds.values(), *plan.config_builds.values()]
    for b in builds:
        out[b.key] = _weights_estimate(b, by_inputs, weights, configs.get(b.model), rate)
    libs = [r for r in records if r.kind == "library"]
    by_target: dict[str, list[float]] = defaultdict(list)
    by_arch: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in libs:
        target = str(r.inputs.get("target"))
        by_target[target].append(wall_seconds(r))
        by_arch[(digest(r.inputs.get("model")), str(r.inputs.get("quantization")), target)].append(wall_seconds(r))
    every = [wall_seconds(r) for r in libs]
    for lb in plan.lib_builds.values():
        out[lb.key] = _library_estimate(lb, by_inputs, by_arch, by_target, every)
    return out


def _weights_estimate(
    b: ConvertBuild | ConfigBuild,
    by_inputs: dict[str, float],
    weights: list[ConvertRecord | ConfigRecord],
    config: dict[str, Any] | None,
    rate: Any,
) -> float:
    if (same := by_inputs.get(across_toolchains(b.inputs))) is not None:
        return same
    size = _weight_bytes(parameters(config), b.quantization)
    source = b.inputs.get("source")
    sibling = [r for r in weights if r.kind == b.kind and r.inputs.get("source") == source and r.size]
    if sibling and size:
        r = sibling[0]
        theirs = _weight_bytes(parameters(config), str(r.inputs.get("quantization"))) or r.size
        return wall_seconds(r) * size / theirs
    if size and (seconds_per_byte := rate(b.kind, b.quantization)) is not None:
        return float(seconds_per_byte * size)
    return float(DEFAULT_SECONDS[b.kind])


def _library_estimate(
    lb: LibBuild,
    by_inputs: dict[str, float],
    by_arch: dict[tuple[str, str, str], list[float]],
    by_target: dict[str, list[float]],
    every: list[float],
) -> float:
    if (same := by_inputs.get(across_toolchains(lb.inputs))) is not None:
        return same
    arch = by_arch.get((digest(lb.inputs.get("model")), lb.quantization, str(lb.inputs.get("target"))))
    for found in (arch, by_target.get(str(lb.inputs.get("target"))), every):
        if found:
            return statistics.median(found)
    return DEFAULT_SECONDS["library"]
