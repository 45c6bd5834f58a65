"""The function the double's libraries and its `transformers` compute: a Llama forward pass in float32 NumPy
(Hugging Face's conventions: RMSNorm, rotate-half rope, grouped-query causal attention, SwiGLU), over
whatever weights it is given. So a q0f32 library (bf16-stored weights) agrees with the float32 source almost
exactly, a 4-bit one measurably less, and a library compiled with another rope base computes another function
while fitting the same weights: the behaviours shared/mlc-reference records for the real tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Weights:
    """float32 matrices in MLC's fused layout: qkv [q; k; v] and gate_up [gate; up] per layer."""

    embed: np.ndarray
    lm_head: np.ndarray
    norm: np.ndarray
    layers: list[dict[str, np.ndarray]]


@dataclass
class Cache:
    """Keys and values of the positions seen so far, per layer: a list holding one [positions, kv_heads, head_dim]
    array once a step has run."""

    keys: list[list[np.ndarray]] = field(default_factory=list)
    values: list[list[np.ndarray]] = field(default_factory=list)


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """x: [tokens, heads, head_dim]."""
    d = x.shape[-1]
    inv = 1.0 / (base ** (np.arange(0, d, 2, dtype=np.float64) / d))
    angles = np.concatenate([positions[:, None] * inv] * 2, axis=-1)[:, None, :]
    half = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
    return (x * np.cos(angles) + half * np.sin(angles)).astype(np.float32)


def forward(w: Weights, config: dict[str, Any], x: np.ndarray, cache: Cache, rope_base: float) -> np.ndarray:
    """Logits [tokens, vocab] of the token embeddings `x` following the cached positions (the cache grows)."""
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim, eps = config["head_dim"], config.get("rms_norm_eps", 1e-6)
    start = len(cache.keys[0][0]) if cache.keys and cache.keys[0] else 0
    n = x.shape[0]
    positions = np.arange(start, start + n, dtype=np.float64)
    if not cache.keys:
        cache.keys, cache.values = [[] for _ in w.layers], [[] for _ in w.layers]
    for i, layer in enumerate(w.layers):
        h = _rms(x, layer["input_norm"], eps)
        qkv = h @ layer["qkv"].T
        q = qkv[:, : heads * head_dim].reshape(n, heads, head_dim)
        k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].reshape(n, kv_heads, head_dim)
        v = qkv[:, (heads + kv_heads) * head_dim :].reshape(n, kv_heads, head_dim)
        q, k = _rope(q, positions, rope_base), _rope(k, positions, rope_base)
        cache.keys[i].append(k)
        cache.values[i].append(v)
        if len(cache.keys[i]) > 1:  # one array per layer: each step adds one, not one per position
            cache.keys[i], cache.values[i] = [np.concatenate(cache.keys[i])], [np.concatenate(cache.values[i])]
        keys, values = cache.keys[i][0], cache.values[i][0]  # [total, kv_heads, head_dim]
        group = heads // kv_heads
        keys, values = np.repeat(keys, group, axis=1), np.repeat(values, group, axis=1)
        scores = q.transpose(1, 0, 2) @ keys.transpose(1, 2, 0) / np.float32(np.sqrt(head_dim))  # [h, t, s]
        total = keys.shape[0]
        mask = np.arange(total)[None, :] > (start + np.arange(n))[:, None]
        scores = np.where(mask[None], -np.inf, scores)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        attended = (scores @ values.transpose(1, 0, 2)).transpose(1, 0, 2).reshape(n, heads * head_dim)
        x = x + attended @ layer["o"].T
        h = _rms(x, layer["post_norm"], eps)
        gate, up = np.split(h @ layer["gate_up"].T, 2, axis=-1)
        x = x + (gate / (1 + np.exp(-gate)) * up) @ layer["down"].T
    return (_rms(x, w.norm, eps) @ w.lm_head.T).astype(np.float32)


def from_hf(tensors: dict[str, np.ndarray], config: dict[str, Any]) -> Weights:
    """The weights of a Hugging Face Llama checkpoint, fused the way MLC fuses them."""
    layers = []
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layers.append({
            "input_norm": tensors[p + "input_layernorm.weight"],
            "post_norm": tensors[p + "post_attention_layernorm.weight"],
            "qkv": np.concatenate([tensors[p + f"self_attn.{x}_proj.weight"] for x in "qkv"]),
            "o": tensors[p + "self_attn.o_proj.weight"],
            "gate_up": np.concatenate([tensors[p + "mlp.gate_proj.weight"], tensors[p + "mlp.up_proj.weight"]]),
            "down": tensors[p + "mlp.down_proj.weight"],
        })  # fmt: skip
    embed = tensors["model.embed_tokens.weight"]
    head = embed if config.get("tie_word_embeddings") else tensors["lm_head.weight"]
    f32 = {k: np.asarray(v, np.float32) for k, v in {"e": embed, "h": head, "n": tensors["model.norm.weight"]}.items()}
    return Weights(f32["e"], f32["h"], f32["n"], [{k: np.asarray(v, np.float32) for k, v in d.items()} for d in layers])


def hf_config(config: dict[str, Any]) -> dict[str, Any]:
    """A Hugging Face config.json in the names `forward` reads."""
    heads = config["num_attention_heads"]
    return {
        "num_attention_heads": heads,
        "num_key_value_heads": config.get("num_key_value_heads", heads),
        "head_dim": config.get("head_dim", config["hidden_size"] // heads),
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6),
        "num_hidden_layers": config["num_hidden_layers"],
    }
