"""Double of tvm.relax.VirtualMachine over the double's library files: the functions of a chat library,
with the argument checks the real runtime makes (parameter count, shapes, dtypes, device)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from tvm.runtime import KVCache, Module, ShapeTuple, Tensor

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
        """Bind the symbolic dimensions and check every parameter; returns the vocabulary size."""
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
        hidden = _hidden(self.meta)
        rows = np.stack([np.cos(np.arange(hidden) * 0.01 + int(i)) for i in ids.numpy().ravel()]).astype(np.float32)
        return Tensor(rows, self.device)

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
        last = embedding.numpy().reshape(-1, embedding.shape[-1])[-1]
        logits = np.tanh(np.arange(vocab, dtype=np.float32) * 0.003 + float(last.sum()) + kv.length)
        if self.doc.get("knobs", {}).get("nan"):
            logits[::7] = np.nan
        return Tensor(logits.reshape(1, 1, vocab), self.device), kv


def _hidden(meta: dict[str, Any]) -> int:
    return next(p["shape"][0] for p in meta["params"] if p["name"] == "model.norm.weight")
