"""Double of `mlc_llm.interface.jit`: the library the engine uses when given none, found in (or compiled into)
`MLC_LLM_HOME/model_lib/<md5>.<ext>` under the key of shared/mlc-reference. Written from the reference, apart
from the farm's own computation of it, so a test can hold one against the other."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlc_llm.model import MODELS
from mlc_llm.support import constants

ORDER = ("context_window_size", "sliding_window_size", "prefill_chunk_size", "attention_sink_size",
         "max_batch_size", "tensor_parallel_shards", "pipeline_parallel_stages", "disaggregation")  # fmt: skip
NO_MINUS_ONE = ("context_window_size", "sliding_window_size", "attention_sink_size")
OPT = {
    "O2": "flashinfer=1;cublas_gemm=1;faster_transformer=0;cudagraph=1;cutlass=1;ipc_allreduce_strategy=NONE",
    "O3": "flashinfer=1;cublas_gemm=1;faster_transformer=1;cudagraph=1;cutlass=1;ipc_allreduce_strategy=AUTO",
}
SYSTEM_LIB = ("iphone", "macabi", "android")


@dataclasses.dataclass
class JITResult:
    model_lib_path: str
    system_lib_prefix: str | None = None


def device_string(device: Any) -> str:
    return device if isinstance(device, str) else f"{device.kind}:{device.index}"


def key_of(chat: dict[str, Any], overrides: dict[str, Any], device: str, system_lib_prefix: str | None = None):
    """(md5, system-lib prefix) of the library for this config, overrides and device."""
    given = {k: overrides.get(k) for k in ORDER}
    merged = {**chat["model_config"],
              **{k: v for k, v in chat.items() if k not in ("model_config", "model_type", "quantization")},
              **{k: v for k, v in given.items() if v is not None}}  # fmt: skip
    doc: dict[str, Any] = {
        "model_config": MODELS[chat["model_type"]].config.from_dict(merged).asdict(),
        "overrides": ";".join(f"{k}={v}" for k, v in given.items()
                              if v is not None and not (k in NO_MINUS_ONE and v == -1)),
        "opt": OPT[overrides.get("opt") or "O2"],
        "device": device,
        "model_type": chat["model_type"],
    }  # fmt: skip
    if device in SYSTEM_LIB and system_lib_prefix is None:
        first_five = hashlib.md5(json.dumps(doc, sort_keys=True, indent=2).encode()).hexdigest()
        system_lib_prefix = f"{chat['model_type']}_{chat['quantization']}_{first_five}".replace("-", "_")
    doc["quantization"] = chat["quantization"]
    if device in SYSTEM_LIB:
        doc["system_lib_prefix"] = system_lib_prefix
    return hashlib.md5(json.dumps(doc, sort_keys=True, indent=2).encode()).hexdigest(), system_lib_prefix


def jit(model_path: Path, overrides: dict[str, Any], device: Any, system_lib_prefix: str | None = None,
        *, skip_log_jit_policy: bool = False) -> JITResult:  # fmt: skip
    dev = device_string(device)
    chat = json.loads((Path(model_path) / "mlc-chat-config.json").read_text())
    md5, prefix = key_of(chat, overrides, dev, system_lib_prefix)
    suffix = "tar" if dev in SYSTEM_LIB else constants.MLC_DSO_SUFFIX
    path = constants.MLC_LLM_HOME / "model_lib" / f"{md5}.{suffix}"
    policy = constants.MLC_JIT_POLICY
    if policy in ("ON", "READONLY") and path.is_file():
        return JITResult(str(path), prefix)
    if policy in ("READONLY", "OFF"):
        raise RuntimeError(f"JIT is disabled by MLC_JIT_POLICY={policy} and {path} is not in the cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / path.name
        subprocess.run([sys.executable, "-m", "mlc_llm", "compile", str(Path(model_path) / "mlc-chat-config.json"),
                        "--device", {"cpu": "llvm"}.get(dev.split(":")[0], dev.split(":")[0]), "--opt", overrides.get("opt") or "O2", "-o", str(out)],
                       check=True, env=os.environ)  # fmt: skip
        os.replace(out, path)
    return JITResult(str(path), prefix)
