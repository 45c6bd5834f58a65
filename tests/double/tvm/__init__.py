"""Test double of TVM: the version facts the probe reads and the runtime calls the reference documents
(load_module, relax.VirtualMachine, devices, contrib.tvmjs.load_tensor_cache), plus the KV-state builtins
mlc_llm's own debug_chat drives prefill and decode with.

Devices: the CPU is always present (index 0); others only when named in MLC_DOUBLE_DEVICES (e.g. `vulkan,cuda`,
or `cuda*2` for two of them).
"""

from __future__ import annotations

import os

from tvm import contrib, relax, runtime, support  # noqa: F401

__version__ = "0.22.dev0"


class Device:
    def __init__(self, kind: str, index: int = 0):
        self.kind, self.index = kind, index

    @property
    def present(self) -> bool:
        counts = {"cpu": 1}
        for item in filter(None, os.environ.get("MLC_DOUBLE_DEVICES", "").split(",")):
            kind, _, n = item.partition("*")
            counts[kind] = int(n or 1)
        return self.index < counts.get(self.kind, 0)

    @property
    def exist(self) -> bool:
        """TVM's `Device.exist`: whether this runtime has the device (as the real one, False for a kind it was
        built without, whatever drivers the machine has)."""
        return self.present

    def __repr__(self) -> str:
        return f"{self.kind}({self.index})"

    def sync(self) -> None:
        """Wait for the kernels launched on the device (TVM's `Device.sync`)."""
        runtime.wait()


def cpu(index: int = 0) -> Device:
    return Device("cpu", index)


def cuda(index: int = 0) -> Device:
    return Device("cuda", index)


def rocm(index: int = 0) -> Device:
    return Device("rocm", index)


def vulkan(index: int = 0) -> Device:
    return Device("vulkan", index)


def metal(index: int = 0) -> Device:
    return Device("metal", index)


def get_global_func(name: str):
    return runtime.GLOBAL_FUNCS[name]
