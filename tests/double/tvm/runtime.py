"""Double of tvm.runtime: modules, tensors and shape tuples, and a device's work queue.

A GPU runs kernels after the host has launched them: a launch returns at once, and only reading a tensor back
(`numpy()`) or `Device.sync()` waits for the queue (shared/mlc-reference, speeds measured three ways). The double
keeps the time the queue is busy until; `launch` adds a kernel's time to it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


class ShapeTuple(tuple):
    def __new__(cls, values: Any) -> ShapeTuple:
        return super().__new__(cls, [int(v) for v in values])


class Tensor:
    def __init__(self, array: np.ndarray, device: Any, dtype: str | None = None):
        self._array, self.device = array, device
        self.dtype = dtype or str(array.dtype)

    @property
    def shape(self) -> ShapeTuple:
        return ShapeTuple(self._array.shape)

    def numpy(self) -> np.ndarray:
        """A copy to the host: waits for the kernels launched before it."""
        wait()
        return self._array


_QUEUE = {"busy_until": 0.0}


def launch(seconds: float) -> None:
    """A kernel of `seconds` on the device, queued after those launched before it."""
    _QUEUE["busy_until"] = max(time.perf_counter(), _QUEUE["busy_until"]) + seconds


def wait() -> None:
    """Until every launched kernel has run."""
    if (left := _QUEUE["busy_until"] - time.perf_counter()) > 0:
        time.sleep(left)


def tensor(array: Any, device: Any = None) -> Tensor:
    return Tensor(np.asarray(array), device)


class Module:
    def __init__(self, path: str, doc: dict[str, Any]):
        self.path, self.doc = path, doc


def load_module(path: str) -> Module:
    from mlc_llm import _library

    if not Path(path).is_file():
        raise ValueError(f"cannot find file {path}")
    return Module(path, _library.read(path))


class KVCache:
    def __init__(self, capacity: int):
        from _llama_math import Cache

        self.capacity, self.length, self.sequences, self.pending = capacity, 0, set(), None
        self.math = Cache()


def _add_sequence(kv: KVCache, seq_id: int) -> None:
    kv.sequences.add(seq_id)


def _begin_forward(kv: KVCache, seq_ids: ShapeTuple, lengths: ShapeTuple) -> None:
    if not set(seq_ids) <= kv.sequences:
        raise ValueError(f"sequence {list(seq_ids)} was not added to the KV cache")
    kv.pending = sum(lengths)


def _end_forward(kv: KVCache) -> None:
    kv.length += kv.pending or 0
    kv.pending = None


def _reshape(t: Tensor, shape: ShapeTuple) -> Tensor:
    return Tensor(t._array.reshape(tuple(shape)), t.device, t.dtype)


GLOBAL_FUNCS = {
    "vm.builtin.kv_state_add_sequence": _add_sequence,
    "vm.builtin.kv_state_begin_forward": _begin_forward,
    "vm.builtin.kv_state_end_forward": _end_forward,
    "vm.builtin.reshape": _reshape,
}
