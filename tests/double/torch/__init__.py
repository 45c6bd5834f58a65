"""Test double of the few `torch` calls a reference pass makes (`tensor`, `no_grad`, `float32`, a tensor's
indexing, `.float()` and `.numpy()`). MLC_DOUBLE_NO_TORCH=1 plays an interpreter without torch."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

if os.environ.get("MLC_DOUBLE_NO_TORCH"):
    raise ModuleNotFoundError("No module named 'torch'", name="torch")

__version__ = "2.13.0+double"
float32 = np.float32


class Tensor:
    def __init__(self, array: Any):
        self._array = np.asarray(array)

    def __getitem__(self, index: Any) -> Tensor:
        return Tensor(self._array[index])

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    def float(self) -> Tensor:
        return Tensor(self._array.astype(np.float32))

    def numpy(self) -> np.ndarray:
        return self._array


def tensor(data: Any) -> Tensor:
    return Tensor(data)


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    yield
