"""Run inside the toolchain's own interpreter after distributions.py (never imported by mlc_farm): load a
compiled library, print its metadata and, given weights, run it; given a request, also make the teacher-forced
pass of fidelity. Prints one JSON object on its last line.

Uses only what shared/mlc-reference documents: `tvm.runtime.load_module`, `tvm.relax.VirtualMachine` on
`tvm.<device>(0)`, `vm["_metadata"]()`, `tvm.contrib.tvmjs.load_tensor_cache`, the chat functions `embed`,
`create_tir_paged_kv_cache`, `prefill` and `decode` (driven with the KV-state builtins the way mlc_llm's own
`testing/debug_chat.py` drives them), and `mlc_llm.MLCEngine` when the toolchain has its C++ runtime; for the
speeds (the reference's "speeds measured three ways"), TVM's `Device.sync()` after the timed steps instead of
a copy of the logits to the host each step; and TVM's `Device.exist`, only to tell a device this runtime lacks
(a driver on the machine, a TVM built without it: `tvm.vulkan(0).exist` is False) from a library that fails.

usage: python - LIBRARY DEVICE [WEIGHTS_DIR PLAN_JSON [REQUEST_JSON]]
  (plan: mlc_farm/checks/speed.py's PLAN and "seconds", the budget of the timed phases;
   request: {"tokens": [...], "k": K, "probe_ids": [[...], ...] or null})
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
        self.kv = self.vm["create_tir_paged_kv_cache"](
            shape([1]),
            shape([self.capacity()]),
            shape([meta["prefill_chunk_size"]]),
            shape([16]),
            shape([int(meta["sliding_window_size"] != -1)]),
        )
        builtin("vm.builtin.kv_state_add_sequence")(self.kv, 0)

    def capacity(self):
        """The tokens one sequence's KV cache holds."""
        ctx, sliding = self.meta["context_window_size"], self.meta["sliding_window_size"]
        return ctx if ctx != -1 else sliding

    def forward(self, ids, length, function):
        """One step over the `length` token ids of the device tensor `ids`; its logits stay on the device."""
        shape, builtin = self.tvm.runtime.ShapeTuple, self.tvm.get_global_func
        emb = self.vm["embed"](ids, self.params)
        emb = builtin("vm.builtin.reshape")(emb, shape([1, length, emb.shape[-1]]))
        builtin("vm.builtin.kv_state_begin_forward")(self.kv, shape([0]), shape([length]))
        logits, _ = self.vm[function](emb, self.kv, self.params)
        builtin("vm.builtin.kv_state_end_forward")(self.kv)
        return logits

    def step(self, ids, function):
        """The logits of the next token after `ids`, read back: finite, of vocabulary size."""
        import numpy as np

        tensor = self.tvm.runtime.tensor(np.array(ids, dtype="int32"), self.device)
        out = self.forward(tensor, len(ids), function).numpy().astype("float32").reshape(-1)
        if out.size != self.vocab:
            raise ValueError(f"{function} gave {out.size} logits, expected vocab_size {self.vocab}")
        if not np.isfinite(out).all():
            raise ValueError(f"{function} gave non-finite logits ({int((~np.isfinite(out)).sum())} of {out.size})")
        return out


def liveness(runner, steps):
    """One prefill of a few token ids and `steps` decode steps, each step's logits read back and checked."""
    runner.new_sequence()
    token = int(runner.step([1, 2, 3, 4], "prefill").argmax())
    for _ in range(steps):
        token = int(runner.step([token], "decode").argmax())


def timed(one, share, plan, warm=False):
    """`one()`'s seconds per run: a warm-up run first unless the library is `warm` (not counted: the first run
    of a set is the slowest, module load and allocations), then runs until the last of them agree (stable), the
    most runs were made, or `share` seconds are spent, with at least one timed run. The runs, and why they
    stopped."""
    least, most = plan["runs"]
    began = time.perf_counter()
    if not warm:
        one()
    runs = []
    while True:
        runs.append(one())
        last = sorted(runs[-least:])
        if len(runs) >= least and last[-1] - last[0] <= plan["stable"] * last[len(last) // 2]:
            return runs, "stable"
        if len(runs) >= most:
            return runs, f"{most} runs"
        if time.perf_counter() - began >= share:
            return runs, "time budget"


def sized(one, most, share, plan):
    """How many steps (or prompt tokens) a run takes: doubling from the plan's least while a run of the next size
    and the fewest timed runs still fit in `share` seconds, up to `most` (a fast device: the plan's full size);
    and whether a run was made (it warmed the library up: module load and allocations are done)."""
    n, warm = min(plan["min_steps"], most), False
    while n < most:
        took, warm = one(n), True
        if took * 2 * plan["runs"][0] > share:
            return n, warm
        n = min(2 * n, most)
    return n, warm


def speed(phase, method, tokens, seconds, stopped):
    """The figure of a phase: the median of its runs' tokens/s, every run, the tokens each run timed (not in the
    method: a slower device times fewer steps, and its figure must still compare with the last toolchain's)."""
    speeds = sorted(tokens / s for s in seconds if s > 0)
    return {
        "phase": phase,
        "method": method,
        "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
        "runs": speeds,
        "steps": tokens,
        "stopped": stopped,
    }


def decode_speed(runner, share, plan):
    """Tokens/s of decode as the kernels run: one token in, the logits left on the device, one synchronisation
    at the end of each run, so the figure is the library's and not the loop's copies to the host."""
    import numpy as np

    began = time.perf_counter()
    most = min(plan["decode_steps"], runner.capacity() - 1)  # one prompt token, then every step in the context
    token = runner.tvm.runtime.tensor(np.array([1], dtype="int32"), runner.device)

    def run(steps):
        runner.new_sequence()
        runner.forward(token, 1, "prefill")
        runner.device.sync()
        start = time.perf_counter()
        for _ in range(steps):
            runner.forward(token, 1, "decode")
        runner.device.sync()
        return time.perf_counter() - start

    steps, warm = sized(run, most, share, plan)
    seconds, stopped = timed(lambda: run(steps), share - (time.perf_counter() - began), plan, warm)
    method = (
        "TVM VM decode: steps after a 1-token prefill, logits left on the device, one sync per run; median of "
        "the runs after a warm-up run"
    )
    return speed("decode", method, steps, seconds, stopped), steps


def prefill_speed(runner, share, plan):
    """Tokens/s of one long prompt (the plan's, or the library's prefill chunk or context if smaller): one call."""
    import numpy as np

    began = time.perf_counter()
    most = min(plan["prefill"], runner.meta["prefill_chunk_size"], runner.capacity())

    def run(n):
        ids = runner.tvm.runtime.tensor(np.arange(1, n + 1, dtype="int32") % runner.vocab, runner.device)
        runner.new_sequence()
        runner.device.sync()
        start = time.perf_counter()
        runner.forward(ids, n, "prefill")
        runner.device.sync()
        return time.perf_counter() - start

    n, warm = sized(run, most, share, plan)
    seconds, stopped = timed(lambda: run(n), share - (time.perf_counter() - began), plan, warm)
    method = "TVM VM prefill: one prompt per run, one sync; median of the runs after a warm-up run"
    return speed("prefill", method, n, seconds, stopped)


def teacher_forced(runner, request):
    """Fidelity's pass: prefill on the first token, then decode on each following one (shared/mlc-reference)."""
    tokens, rows = request["tokens"], []
    start = time.perf_counter()
    runner.new_sequence()
    for i, token in enumerate(tokens[:-1]):
        rows.append(runner.step([token], "prefill" if i == 0 else "decode"))
    out = summarize(rows, tokens, request["k"], request.get("probe_ids"))
    return {**out, "seconds": time.perf_counter() - start}


def engine_speed(device_name, weights_dir, lib, steps, share, plan):
    """The public way to run a model: chat completions through MLCEngine, its own method (prefill, sampling and
    detokenizing included), never mixed with the VM's figures."""
    from mlc_llm import MLCEngine

    began = time.perf_counter()
    engine = MLCEngine(model=weights_dir, device=device_name, model_lib=lib, mode="local")
    made = []

    def one():
        start = time.perf_counter()
        reply = engine.chat.completions.create(messages=[{"role": "user", "content": "Hello"}], max_tokens=steps)
        seconds = time.perf_counter() - start
        if not reply.usage.completion_tokens or not reply.choices[0].message.content:
            raise RuntimeError("MLCEngine generated nothing")
        made.append(reply.usage.completion_tokens)
        return seconds

    try:
        seconds, stopped = timed(one, share - (time.perf_counter() - began), plan)
    finally:
        engine.terminate()
    method = "MLCEngine chat completion (prefill and sampling included); median of the runs after a warm-up run"
    return speed("decode", method, min(made[1:]), seconds, stopped)


def run_checks(runner, lib, device_name, weights_dir, plan):
    """Liveness, then the speeds within the plan's seconds: half to the VM's decode, a quarter to its prefill, a
    quarter to MLCEngine's where the toolchain has it."""
    budget = plan["seconds"]
    liveness(runner, plan["liveness"])
    decode, steps = decode_speed(runner, budget / 2, plan)
    speeds = [decode, prefill_speed(runner, budget / 4, plan)]
    try:
        import mlc_llm

        has_engine = hasattr(mlc_llm, "MLCEngine")
    except ImportError:
        has_engine = False
    if has_engine:
        speeds.append(engine_speed(device_name, weights_dir, lib, steps, budget / 4, plan))
    return {
        "status": "passed",
        "method": decode["method"],
        "tokens_per_s": decode["tokens_per_s"],
        "tokens_per_s_runs": decode["runs"],
        "speeds": speeds,
    }


def main(argv):
    import tvm

    lib, device_name = argv[0], argv[1]
    device = getattr(tvm, device_name)(0)
    try:
        vm = tvm.relax.VirtualMachine(tvm.runtime.load_module(lib), device)
    except Exception as e:
        # A library runs only where its device is present. When this runtime has no such device (a driver on the
        # machine, but a TVM built without it), that is the answer, not the library's failure.
        if device_name == "cpu" or getattr(device, "exist", True):
            raise
        print(json.dumps({"absent": f"{device_name}(0) does not exist for it: {type(e).__name__}: {e}"}))
        return
    meta = json.loads(vm["_metadata"]())
    out = {"metadata": meta}
    if len(argv) > 2:
        weights_dir, plan = argv[2], json.loads(argv[3])
        try:
            runner = Runner(tvm, vm, meta, device, weights_dir)
            if runner.missing:
                run = {
                    "status": "failed",
                    "detail": f"the weights have no {runner.missing[0]} ({len(runner.missing)} params missing)",
                }
            else:
                run = run_checks(runner, lib, device_name, weights_dir, plan)
                if len(argv) > 4:
                    out["distributions"] = teacher_forced(runner, read_request(argv[4]))
        except Exception as e:  # the library or the weights are at fault: a result, not a crash
            run = {"status": "failed", "detail": f"{type(e).__name__}: {e}"}
        out["run"] = {**run, "peak_memory_bytes": peak_rss()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
