"""Double of tvm.contrib.tvmjs.load_tensor_cache: read tensor-cache.json and its shards onto a device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tvm.runtime import Tensor

_NUMPY = {"float16": np.float16, "float32": np.float32, "uint32": np.uint32, "bfloat16": np.uint16}


def load_tensor_cache(cache_dir: str, device: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
    root = Path(cache_dir)
    doc = json.loads((root / "tensor-cache.json").read_text())
    out: dict[str, Tensor] = {}
    for shard in doc["records"]:
        data = (root / shard["dataPath"]).read_bytes()
        if len(data) != shard["nbytes"]:
            raise ValueError(f"{shard['dataPath']}: expected {shard['nbytes']} bytes, found {len(data)}")
        for rec in shard["records"]:
            raw = data[rec["byteOffset"] : rec["byteOffset"] + rec["nbytes"]]
            stored = np.uint16 if rec["format"] == "f32-to-bf16" and rec["dtype"] == "float32" else _NUMPY[rec["dtype"]]
            array = np.frombuffer(raw, dtype=stored).reshape(rec["shape"])
            out[rec["name"]] = Tensor(array, device, rec["dtype"])
    return out, doc["metadata"]
