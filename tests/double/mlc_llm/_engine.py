"""Double of mlc_llm.MLCEngine (the public way to run a model): chat completions over the double's TVM."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import tvm
from tvm.contrib import tvmjs
from tvm.runtime import ShapeTuple

from mlc_llm.interface import jit
from mlc_llm.support import download_cache


def _device(name: str) -> Any:
    """`cpu`, `cuda`, `cuda:1`...; `auto`: the first GPU present, else the CPU."""
    if name == "auto":
        found = [k for k in ("cuda", "rocm", "metal", "vulkan") if getattr(tvm, k)(0).present]
        name = found[0] if found else "cpu"
    kind, _, index = name.partition(":")
    return getattr(tvm, "cpu" if kind == "llvm" else kind)(int(index or 0))


class MLCEngine:
    def __init__(self, model: str, device: str = "auto", model_lib: str | None = None, mode: str = "local"):
        self._dev = _device(device)
        model = str(download_cache.get_or_download_model(model))
        if model_lib is None:  # the engine's defaults: every override None
            model_lib = jit.jit(Path(model), dict.fromkeys((*jit.ORDER, "opt")), self._dev).model_lib_path
        self.model_path, self.model_lib = model, model_lib
        self._vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(model_lib), self._dev)
        meta = json.loads(self._vm["_metadata"]())
        weights, _ = tvmjs.load_tensor_cache(model, self._dev)
        self._params = [weights[p["name"]] for p in meta["params"]]
        self._config = json.loads((Path(model) / "mlc-chat-config.json").read_text())
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._create))

    def _step(self, ids: list[int], kv: Any) -> np.ndarray:
        emb = self._vm["embed"](tvm.runtime.tensor(np.array(ids, "int32"), self._dev), self._params)
        emb = tvm.get_global_func("vm.builtin.reshape")(emb, ShapeTuple([1, len(ids), emb.shape[-1]]))
        tvm.get_global_func("vm.builtin.kv_state_begin_forward")(kv, ShapeTuple([0]), ShapeTuple([len(ids)]))
        logits, kv = self._vm["prefill" if len(ids) > 1 else "decode"](emb, kv, self._params)
        tvm.get_global_func("vm.builtin.kv_state_end_forward")(kv)
        out = logits.numpy()
        if not np.isfinite(out).all():
            raise RuntimeError("InternalError: sampling failed: probabilities are not finite")
        return out

    def _create(self, messages: list[dict[str, str]], max_tokens: int = 16, **_: Any) -> SimpleNamespace:
        prompt = [1 + len(w) for m in messages for w in m["content"].split()] or [1]
        kv = self._vm["create_tir_paged_kv_cache"](ShapeTuple([1]), ShapeTuple([self._config["context_window_size"]]),
                                                     ShapeTuple([self._config["prefill_chunk_size"]]), ShapeTuple([16]),
                                                     ShapeTuple([0]))  # fmt: skip
        tvm.get_global_func("vm.builtin.kv_state_add_sequence")(kv, 0)
        tokens = [int(self._step(prompt, kv).argmax())]
        while len(tokens) < max_tokens:
            tokens.append(int(self._step([tokens[-1]], kv).argmax()))
        text = " ".join(f"t{t}" for t in tokens)
        usage = SimpleNamespace(prompt_tokens=len(prompt), completion_tokens=len(tokens))
        choice = SimpleNamespace(message=SimpleNamespace(role="assistant", content=text), finish_reason="length")
        return SimpleNamespace(choices=[choice], usage=usage)

    def terminate(self) -> None:
        self._vm = None
