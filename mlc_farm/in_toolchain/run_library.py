"""Run inside the toolchain's own interpreter after distributions.py (never imported by mlc_farm): load a
compiled library, print its metadata and, given weights, run it; given a request, also make the teacher-forced
pass of fidelity. Prints one JSON object on its last line.

Uses only what shared/mlc-reference documents: `tvm.runtime.load_module`, `tvm.relax.VirtualMachine` on
`tvm.<device>(0)`, `vm["_metadata"]()`, `tvm.contrib.tvmjs.load_tensor_cache`, the chat functions `embed`,
`create_tir_paged_kv_cache`, `prefill` and `decode` (driven with the KV-state builtins the way mlc_llm's own
`testing/debug_chat.py` drives them), and `mlc_llm.MLCEngine` when the toolchain has its C++ runtime.

usage: python - LIBRARY DEVICE [WEIGHTS_DIR DECODE_STEPS RUNS [REQUEST_JSON]]
  (request: {"tokens": [...], "k": K, "probe_ids": [[...], ...] or null})
"""

# ruff: noqa: F821  (json, sys, time, summarize and read_request come from distributions.py, which runs first)

import resource


def peak_rss():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class Runner:
    """A library with its weights on a device: sequences of prefill and decode steps."""

    def __init__(self, tvm, vm, meta, device, weights_dir):
        from tvm.contrib import tvmjs

        self.tvm, self.vm, self.meta, self.device = tvm, vm, meta, device
        weights, _ = tvmjs.load_tensor_cache(weights_dir, device)
        self.missing = [p["name"] for p in meta["params"] if p["name"] not in weights]
        self.params = [weights[p["name"]] for p in meta["params"] if p["name"] in weights]
        with open(f"{weights_dir}/mlc-chat-config.json", encoding="utf-8") as f:
            self.vocab = json.load(f)["vocab_size"]

    def new_sequence(self):
        shape, builtin, meta = self.tvm.runtime.ShapeTuple, self.tvm.get_global_func, self.meta
        ctx, sliding = meta["context_window_size"], meta["sliding_window_size"]
        self.kv = self.vm["create_tir_paged_kv_cache"](
            shape([1]), shape([ctx if ctx != -1 else sliding]), shape([meta["prefill_chunk_size"]]), shape([16]),
            shape([int(sliding != -1)]),
        )  # fmt: skip
        builtin("vm.builtin.kv_state_add_sequence")(self.kv, 0)

    def step(self, ids, function):
        """The logits of the next token after `ids`: finite, of vocabulary size."""
        import numpy as np

        tvm, shape, builtin = self.tvm, self.tvm.runtime.ShapeTuple, self.tvm.get_global_func
        emb = self.vm["embed"](tvm.runtime.tensor(np.array(ids, dtype="int32"), self.device), self.params)
        emb = builtin("vm.builtin.reshape")(emb, shape([1, len(ids), emb.shape[-1]]))
        builtin("vm.builtin.kv_state_begin_forward")(self.kv, shape([0]), shape([len(ids)]))
        logits, _ = self.vm[function](emb, self.kv, self.params)
        builtin("vm.builtin.kv_state_end_forward")(self.kv)
        out = logits.numpy().astype("float32").reshape(-1)
        if out.size != self.vocab:
            raise ValueError(f"{function} gave {out.size} logits, expected vocab_size {self.vocab}")
        if not np.isfinite(out).all():
            raise ValueError(f"{function} gave non-finite logits ({int((~np.isfinite(out)).sum())} of {out.size})")
        return out


def tvm_run(runner, steps, runs):
    """`runs` times: one prefill of a few token ids, then `steps` timed decode steps. Tokens/s is the median of
    the runs, and each run's figure is kept: a later drop is flagged only beyond their spread."""
    speeds = []
    for _ in range(runs):
        runner.new_sequence()
        token = int(runner.step([1, 2, 3, 4], "prefill").argmax())
        start = time.perf_counter()
        for _ in range(steps):
            token = int(runner.step([token], "decode").argmax())
        seconds = time.perf_counter() - start
        speeds.append(steps / seconds if seconds > 0 else None)
    known = sorted(s for s in speeds if s is not None)
    median = known[len(known) // 2] if known else None
    return {"status": "passed", "method": f"tvm runtime: {runs} x (prefill of 4 tokens + {steps} decode steps)",
            "tokens_per_s": median, "tokens_per_s_runs": known}  # fmt: skip


def teacher_forced(runner, request):
    """Fidelity's pass: prefill on the first token, then decode on each following one (shared/mlc-reference)."""
    tokens, rows = request["tokens"], []
    start = time.perf_counter()
    runner.new_sequence()
    for i, token in enumerate(tokens[:-1]):
        rows.append(runner.step([token], "prefill" if i == 0 else "decode"))
    out = summarize(rows, tokens, request["k"], request.get("probe_ids"))
    return {**out, "seconds": time.perf_counter() - start}


def engine_run(device_name, weights_dir, lib, steps):
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


def main(argv):
    import tvm

    lib, device_name = argv[0], argv[1]
    device = getattr(tvm, device_name)(0)
    vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(lib), device)
    meta = json.loads(vm["_metadata"]())
    out = {"metadata": meta}
    if len(argv) > 2:
        weights_dir, steps, runs = argv[2], int(argv[3]), int(argv[4])
        try:
            runner = Runner(tvm, vm, meta, device, weights_dir)
            if runner.missing:
                run = {
                    "status": "failed",
                    "detail": f"the weights have no {runner.missing[0]} ({len(runner.missing)} params missing)",
                }
            else:
                run = tvm_run(runner, steps, runs)
                if len(argv) > 5:
                    out["distributions"] = teacher_forced(runner, read_request(argv[5]))
            if run["status"] == "passed":
                try:
                    import mlc_llm

                    has_engine = hasattr(mlc_llm, "MLCEngine")
                except ImportError:
                    has_engine = False
                if has_engine:
                    engine = engine_run(device_name, weights_dir, lib, steps)
                    run = {**run, **{k: v for k, v in engine.items() if k != "tokens_per_s"},
                           "method": f"{run['method']}; {engine.get('method', 'MLCEngine')}"}  # fmt: skip
        except Exception as e:  # the library or the weights are at fault: a result, not a crash
            run = {"status": "failed", "detail": f"{type(e).__name__}: {e}"}
        out["run"] = {**run, "peak_memory_bytes": peak_rss()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
