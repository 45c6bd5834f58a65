"""Double of tvm.relax.VirtualMachine over the double's library files: the functions of a chat library,
with the argument checks the real runtime makes (parameter count, shapes, dtypes, device). `prefill` and
`decode` compute a Llama over the weights they are given (`_llama_math`), with the rope base the library was
compiled for (or the MLC_DOUBLE_ROPE_BASE knob's, a library that fits its weights and computes another
function).

Each step's kernels take device time (`tvm.runtime.launch`), as on a GPU at batch 1, where a decode step reads
every weight once: the bytes of the weights given over MLC_DOUBLE_BANDWIDTH (bytes/s, default 1e9), plus 2
operations per weight and token at 1e11 per second. So a 4-bit build of a model decodes faster than its 16-bit
one, and a prefill's tokens/s is far above a decode step's. MLC_DOUBLE_DECODE_SLEEP=SECONDS adds that much to
every step's kernels (a slower kernel, for speed regressions)."""

from __future__ import annotations

import json
import os
from typing import Any

import _llama_math
import numpy as np

from tvm.runtime import KVCache, Module, ShapeTuple, Tensor, launch

_DEVICE_OF_TARGET = {"llvm": "cpu", "c": "cpu", "cuda": "cuda", "rocm": "rocm", "vulkan": "vulkan", "metal": "metal"}


class VirtualMachine:
    def __init__(self, module: Module, device: Any):
        kind = module.doc["target"]["kind"]
        want = _DEVICE_OF_TARGET.get(kind)
        if want != device.kind:
            raise ValueError(f"the library was compiled for {kind} and cannot run on {device!r}")
        if not device.present:
            raise RuntimeError(f"device {device!r} is not present on this machine")
        self.doc, self.device, self.meta = module.doc, device, module.doc["metadata"]
        self._weights: tuple[tuple[int, ...], _llama_math.Weights] | None = None
        self._checked: tuple[tuple[int, ...], int] | None = None
        self._functions = {
            "_metadata": lambda: json.dumps(self.meta),
            "embed": self._embed,
            "prefill": self._forward,
            "decode": self._forward,
            "create_tir_paged_kv_cache": self._create_kv,
            "softmax_with_temperature": lambda logits, _t: logits,
        }

    def __getitem__(self, name: str):
        if name not in self._functions:
            raise AttributeError(f"Module has no function '{name}'")
        return self._functions[name]

    def _check_params(self, params: list[Tensor]) -> int:
        """Bind the symbolic dimensions and check every parameter; returns the vocabulary size. Once per set of
        parameters: the tensors are not changed in between."""
        ident = tuple(id(p) for p in params)
        if self._checked is not None and self._checked[0] == ident:
            return self._checked[1]
        vocab = self._bind(params)
        self._checked = ident, vocab
        return vocab

    def _bind(self, params: list[Tensor]) -> int:
        specs = self.meta["params"]
        if len(params) != len(specs):
            raise ValueError(f"expected {len(specs)} parameters, got {len(params)}")
        bound: dict[str, int] = {}
        for spec, t in zip(specs, params, strict=True):
            if t.dtype != spec["dtype"] or len(t.shape) != len(spec["shape"]):
                raise ValueError(f"parameter {spec['name']}: expected {spec['dtype']}{spec['shape']}, got "
                                 f"{t.dtype}{list(t.shape)}")  # fmt: skip
            for want, got in zip(spec["shape"], t.shape, strict=True):
                if isinstance(want, str):
                    want = bound.setdefault(want, got)
                if want != got:
                    raise ValueError(f"parameter {spec['name']}: shape mismatch, expected {spec['shape']}, "
                                     f"got {list(t.shape)}")  # fmt: skip
        return bound.get("vocab_size", 0)

    def _embed(self, ids: Tensor, params: list[Tensor]) -> Tensor:
        self._check_params(params)
        rows = self._model(params).embed[ids._array.ravel().astype(np.int64)]
        return Tensor(rows.astype(np.float32), self.device)

    def _model(self, params: list[Tensor]) -> _llama_math.Weights:
        """The float32 weights behind `params` (dequantized once per set of parameters)."""
        ident = tuple(id(p) for p in params)
        if self._weights is None or self._weights[0] != ident:
            arrays = {spec["name"]: _float32(t) for spec, t in zip(self.meta["params"], params, strict=True)}
            tensors = {}
            for name, array in arrays.items():
                if name.endswith(".q_weight"):
                    base = name.removesuffix(".q_weight")
                    tensors[base + ".weight"] = _dequantize(array, arrays[base + ".q_scale"], self.meta["quantization"])
                elif not name.endswith(".q_scale"):
                    tensors[name] = array
            self._weights = ident, _mlc_weights(tensors, self.doc["identity"]["model_config"])
        return self._weights[1]

    def _create_kv(self, max_seqs: ShapeTuple, max_len: ShapeTuple, chunk: ShapeTuple, page: ShapeTuple,
                   sliding: ShapeTuple) -> KVCache:  # fmt: skip
        if max_len[0] > self.meta["context_window_size"]:
            raise ValueError(f"max_total_sequence_length {max_len[0]} exceeds the context window")
        return KVCache(max_len[0])

    def _forward(self, embedding: Tensor, kv: KVCache, params: list[Tensor]) -> tuple[Tensor, KVCache]:
        vocab = self._check_params(params)
        if kv.pending is None:
            raise ValueError("begin_forward was not called on the KV cache")
        if kv.length + kv.pending > kv.capacity:
            raise ValueError("the KV cache is full")
        weights, config = self._model(params), self.doc["identity"]["model_config"]
        rows = embedding._array.reshape(-1, embedding.shape[-1]).astype(np.float32)
        launch(_kernel_seconds(params, weights, len(rows)))
        knobs = self.doc.get("knobs", {})
        base = float(knobs.get("rope_base") or config.get("position_embedding_base", 10000))
        logits = _llama_math.forward(weights, config, rows, kv.math, base)[-1][:vocab]
        if knobs.get("nan"):
            logits[::7] = np.nan
        return Tensor(logits.reshape(1, 1, vocab), self.device), kv


def _kernel_seconds(params: list[Tensor], model: _llama_math.Weights, tokens: int) -> float:
    """The device time of one step over `tokens` tokens (see the module's docstring)."""
    nbytes = sum(p._array.nbytes for p in params)
    arrays = [model.embed, model.lm_head, model.norm, *(a for layer in model.layers for a in layer.values())]
    weights = sum(a.size for a in arrays)
    slower = float(os.environ.get("MLC_DOUBLE_DECODE_SLEEP") or 0)
    return nbytes / float(os.environ.get("MLC_DOUBLE_BANDWIDTH") or 1e9) + 2 * weights * tokens / 1e11 + slower


def _float32(t: Tensor) -> np.ndarray:
    """A parameter as stored in memory, read as numbers: bf16 (stored as uint16) widened to float32."""
    a = t._array
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a if a.dtype == np.uint32 else a.astype(np.float32)


def _dequantize(packed: np.ndarray, scale: np.ndarray, quantization: str) -> np.ndarray:
    from mlc_llm._library import GROUP, layout

    bits = layout(quantization)[0]
    per_word = 32 // bits
    levels = np.stack([(packed >> np.uint32(i * bits)) & np.uint32(2**bits - 1) for i in range(per_word)], axis=-1)
    in_dim = scale.shape[1] * GROUP
    levels = levels.reshape(packed.shape[0], -1)[:, :in_dim].astype(np.float32) - 2 ** (bits - 1)
    return (levels.reshape(packed.shape[0], -1, GROUP) * scale[..., None]).reshape(packed.shape[0], in_dim)


def _mlc_weights(t: dict[str, np.ndarray], mc: dict[str, Any]) -> _llama_math.Weights:
    layers = []
    for i in range(mc["num_hidden_layers"]):
        p = f"model.layers.{i}."
        layers.append({
            "input_norm": t[p + "input_layernorm.weight"], "post_norm": t[p + "post_attention_layernorm.weight"],
            "qkv": t[p + "self_attn.qkv_proj.weight"], "o": t[p + "self_attn.o_proj.weight"],
            "gate_up": t[p + "mlp.gate_up_proj.weight"], "down": t[p + "mlp.down_proj.weight"],
        })  # fmt: skip
    embed = t["model.embed_tokens.weight"]
    head = embed if mc.get("tie_word_embeddings") else t["lm_head.weight"]
    return _llama_math.Weights(embed, head, t["model.norm.weight"], layers)
