"""Test double of `transformers.AutoModelForCausalLM` for a Llama checkpoint (config.json and
*.safetensors): `from_pretrained(DIR, dtype=torch.float32)`, then `model(ids).logits` for every position,
computed by `_llama_math` in float32 over the source weights. Absent with MLC_DOUBLE_NO_TORCH=1, like torch.
MLC_DOUBLE_REFERENCE_LOG=FILE appends a line per model loaded (to count reference passes)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _llama_math
import numpy as np
import torch

__version__ = "5.23.0+double"


class _CausalLM:
    def __init__(self, weights: _llama_math.Weights, config: dict[str, Any]):
        self.weights, self.config = weights, config

    def eval(self) -> _CausalLM:
        return self

    def __call__(self, input_ids: torch.Tensor) -> SimpleNamespace:
        ids = input_ids.numpy()
        rows = []
        for sequence in ids:
            x = self.weights.embed[sequence]
            cache = _llama_math.Cache()
            base = float(self.config.get("rope_theta", 10000))
            rows.append(_llama_math.forward(self.weights, _llama_math.hf_config(self.config), x, cache, base))
        return SimpleNamespace(logits=torch.tensor(np.stack(rows)))


class AutoModelForCausalLM:
    @staticmethod
    def from_pretrained(path: str, dtype: Any = None, **_: Any) -> _CausalLM:
        from safetensors.numpy import load_file

        if log := os.environ.get("MLC_DOUBLE_REFERENCE_LOG"):
            with open(log, "a") as f:
                f.write(json.dumps({"step": "reference", "path": str(path)}) + "\n")
        root = Path(path)
        config = json.loads((root / "config.json").read_text())
        if config.get("model_type") not in ("llama", "mistral"):
            raise ValueError(f"this double runs Llama-style checkpoints only, not {config.get('model_type')!r}")
        tensors: dict[str, np.ndarray] = {}
        for f in sorted(root.glob("*.safetensors")):
            tensors |= load_file(str(f))
        if dtype not in (None, torch.float32):
            raise ValueError(f"this double computes in float32 only, not {dtype!r}")
        return _CausalLM(_llama_math.from_hf(tensors, config), config)
