"""Run inside the toolchain's own interpreter (never imported by mlc_farm): load a compiled library, print its
metadata and, given weights, run it. Prints one JSON object on its last line.

Uses only what shared/mlc-reference documents: `tvm.runtime.load_module`, `tvm.relax.VirtualMachine` on
`tvm.<device>(0)`, `vm["_metadata"]()`, `tvm.contrib.tvmjs.load_tensor_cache`, the chat functions `embed`,
`create_tir_paged_kv_cache`, `prefill` and `decode` (driven with the KV-state builtins the way mlc_llm's own
`testing/debug_chat.py` drives them), and `mlc_llm.MLCEngine` when the toolchain has its C++ runtime.

usage: python - LIBRARY DEVICE [WEIGHTS_DIR DECODE_STEPS]
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def peak_rss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def tvm_run(tvm: Any, vm: Any, meta: dict[str, Any], device: Any, weights_dir: str, steps: int) -> dict[str, Any]:
    """One prefill of a few token ids, then `steps` decode steps: logits must be finite and of vocab size."""
    import numpy as np
    from tvm.contrib import tvmjs

    weights, _ = tvmjs.load_tensor_cache(weights_dir, device)
    missing = [p["name"] for p in meta["params"] if p["name"] not in weights]
    if missing:
        return {"status": "failed", "detail": f"the weights have no {missing[0]} ({len(missing)} params missing)"}
    params = [weights[p["name"]] for p in meta["params"]]
    with open(f"{weights_dir}/mlc-chat-config.json", encoding="utf-8") as f:
        config = json.load(f)
    vocab = config["vocab_size"]
    shape = tvm.runtime.ShapeTuple
    builtin = tvm.get_global_func
    ctx, sliding = meta["context_window_size"], meta["sliding_window_size"]
    kv = vm["create_tir_paged_kv_cache"](
        shape([1]), shape([ctx if ctx != -1 else sliding]), shape([meta["prefill_chunk_size"]]), shape([16]),
        shape([int(sliding != -1)]),
    )  # fmt: skip
    builtin("vm.builtin.kv_state_add_sequence")(kv, 0)

    def step(ids: list[int], function: str) -> int:
        emb = vm["embed"](tvm.runtime.tensor(np.array(ids, dtype="int32"), device), params)
        emb = builtin("vm.builtin.reshape")(emb, shape([1, len(ids), emb.shape[-1]]))
        builtin("vm.builtin.kv_state_begin_forward")(kv, shape([0]), shape([len(ids)]))
        logits, _ = vm[function](emb, kv, params)
        builtin("vm.builtin.kv_state_end_forward")(kv)
        out = logits.numpy().astype("float32").reshape(-1)
        if out.size != vocab:
            raise ValueError(f"{function} gave {out.size} logits, expected vocab_size {vocab}")
        if not np.isfinite(out).all():
            raise ValueError(f"{function} gave non-finite logits ({int((~np.isfinite(out)).sum())} of {out.size})")
        return int(out.argmax())

    token = step([1, 2, 3, 4], "prefill")
    start = time.perf_counter()
    for _ in range(steps):
        token = step([token], "decode")
    seconds = time.perf_counter() - start
    return {"status": "passed", "method": f"tvm runtime: prefill of 4 tokens + {steps} decode steps",
            "tokens_per_s": steps / seconds if seconds > 0 else None}  # fmt: skip


def engine_run(device_name: str, weights_dir: str, lib: str, steps: int) -> dict[str, Any]:
    """The public way to run a model: one chat completion through MLCEngine."""
    from mlc_llm import MLCEngine

    engine = MLCEngine(model=weights_dir, device=device_name, model_lib=lib, mode="local")
    try:
        start = time.perf_counter()
        reply = engine.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], max_tokens=steps)
        seconds = time.perf_counter() - start
    finally:
        engine.terminate()
    tokens = reply.usage.completion_tokens
    if not tokens or not reply.choices[0].message.content:
        return {"status": "failed", "detail": "MLCEngine generated nothing"}
    return {"status": "passed", "method": f"MLCEngine chat completion of {tokens} tokens",
            "tokens_per_s": tokens / seconds if seconds > 0 else None}  # fmt: skip


def main(argv: list[str]) -> None:
    import tvm

    lib, device_name = argv[0], argv[1]
    device = getattr(tvm, device_name)(0)
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(lib), device)
    meta = json.loads(vm["_metadata"]())
    out = {"metadata": meta}
    if len(argv) > 2:
        weights_dir, steps = argv[2], int(argv[3])
        try:
            run = tvm_run(tvm, vm, meta, device, weights_dir, steps)
            if run["status"] == "passed":
                try:
                    import mlc_llm

                    has_engine = hasattr(mlc_llm, "MLCEngine")
                except ImportError:
                    has_engine = False
                if has_engine:
                    engine = engine_run(device_name, weights_dir, lib, steps)
                    run = {**engine, "method": f"{run['method']}; {engine.get('method', 'MLCEngine')}"}
        except Exception as e:  # the library or the weights are at fault: a result, not a crash
            run = {"status": "failed", "detail": f"{type(e).__name__}: {e}"}
        out["run"] = {**run, "peak_memory_bytes": peak_rss()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
