"""Conversion fingerprints: what a toolchain's `convert_weight` does to an architecture x quantization, seen on
a tiny twin of the source (same architecture fields, tiny sizes, seeded weights in the source's dtype).

The sha256 of the twin's converted output (the shards and the tensor-cache records, nothing that names a path
or a version) is the toolchain's conversion fingerprint for that conversion class. A convert key holds the
fingerprint instead of the toolchain's version, so a nightly whose converter did the same thing reuses the
weights, and one whose converter changed for a class re-converts exactly its sources.

The twin writer knows Hugging Face's Llama-style parameter names (Llama, Mistral, Qwen2/3): another model type
has no twin, and its conversion is keyed by the toolchain version as before.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from mlc_farm.digests import digest
from mlc_farm.planning.keys import architecture

TWIN_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# Sizes the twin shrinks; every other architecture field is kept as the source has it.
SIZE_FIELDS = frozenset(
    {
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "head_dim",
    }
)
GROUP = 32  # the largest group size of MLC's group quantizations: twin dimensions are multiples of it
# A twin's parameters at most (the largest real classes, head size 256 with 16:1 grouped queries, take ~75M):
# the twin is written in memory, so a class whose twin would be larger keeps version keys instead.
TWIN_MAX_PARAMETERS = 1 << 27
_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}  # safetensors' names


def conversion_class(config: dict[str, Any], quantization: str) -> dict[str, Any] | None:
    """What distinguishes a conversion: the architecture's fields but its sizes, the grouped-query ratio and
    head size, the weights' dtype, the quantization and the format. None: no twin for this model type."""
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    if config.get("model_type") not in TWIN_TYPES or not isinstance(heads, int) or not isinstance(hidden, int):
        return None
    kept = {k: v for k, v in architecture(config).items() if k not in SIZE_FIELDS}
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    cls = {
        "architecture": kept,
        "gqa_ratio": heads // int(config.get("num_key_value_heads") or heads),
        "head_dim": int(config.get("head_dim") or hidden // heads),
        "dtype": dtype if dtype in _DTYPES else "float32",
        "quantization": quantization,
        "format": "huggingface-safetensor",
    }
    return cls if twin_parameters(cls) <= TWIN_MAX_PARAMETERS else None


def twin_parameters(cls: dict[str, Any]) -> int:
    """How many parameters the class's twin holds, counted from its shapes without making them."""
    total = 0
    for shape in _tensor_names(twin_config(cls)).values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def class_key(cls: dict[str, Any]) -> str:
    return digest(cls)


def twin_config(cls: dict[str, Any]) -> dict[str, Any]:
    """The twin's config.json: the class's fields with tiny sizes (dimensions multiples of GROUP)."""
    ratio, head_dim = cls["gqa_ratio"], cls["head_dim"]
    kv = 1
    while (kv * ratio * head_dim) % GROUP:
        kv += 1
    heads = kv * ratio
    return {
        **cls["architecture"],
        "hidden_size": heads * head_dim,
        "intermediate_size": 2 * GROUP,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": head_dim,
        "vocab_size": 8 * GROUP,
        "torch_dtype": cls["dtype"],
    }


def _tensor_names(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    h, inter, head_dim = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    bias = config.get("attention_bias") or config["model_type"] == "qwen2"
    names: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (config["vocab_size"], h),
        "model.norm.weight": (h,),
    }
    if not config.get("tie_word_embeddings"):
        names["lm_head.weight"] = (config["vocab_size"], h)
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        names |= {
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
        }
        if bias:
            names |= {
                p + "self_attn.q_proj.bias": (q,),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.bias": (kv,),
            }
        if config["model_type"] == "qwen3":
            names |= {p + "self_attn.q_norm.weight": (head_dim,), p + "self_attn.k_norm.weight": (head_dim,)}
    return names


def write_twin(cls: dict[str, Any], out: Path, seed: int = 0) -> Path:
    """config.json and model.safetensors (seeded weights in the class's dtype) of the class's twin."""
    import numpy as np

    config = twin_config(cls)
    rng = np.random.default_rng(seed)
    name = _DTYPES[config["torch_dtype"]]
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for tensor, shape in sorted(_tensor_names(config).items()):
        values = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        if name == "BF16":
            bits = values.view(np.uint32)
            data = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
        else:
            data = values.astype(np.float16 if name == "F16" else np.float32).tobytes()
        header[tensor] = {"dtype": name, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    with (out / "model.safetensors").open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for data in blobs:
            f.write(data)
    return out


def fingerprint(converted: Path) -> str:
    """sha256 of a conversion's output: every tensor-cache record (without the shard checksums, which the
    shards' own bytes cover) and the bytes of every shard, in order."""
    doc = json.loads((converted / "tensor-cache.json").read_text())
    h = hashlib.sha256()
    for shard in doc.get("records", []):
        h.update(json.dumps({k: v for k, v in shard.items() if k != "md5sum"}, sort_keys=True).encode())
        h.update((converted / shard["dataPath"]).read_bytes())
    return h.hexdigest()
