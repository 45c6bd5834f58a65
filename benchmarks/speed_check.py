"""What timing the speeds adds to a cell's check (run by hand), against its library's compile: the check's run
in the toolchain's interpreter (`validate.run_library`: load, liveness, speeds, MLCEngine) with the speed plan
under its budget (a tenth of the compile), with the old fixed plan (a warm-up and 3 runs of 128 decode steps,
of a 512-token prompt and of MLCEngine, whatever they cost), and with no timed steps.

The baselines, measured in the same run: the library's compile (toolchain double) and the check's run
without speeds (one token per phase, one run). The double's steps cost its host math plus the time to read
its weights at MLC_DOUBLE_BANDWIDTH (default 1 GB/s). `--slow N` slows its device down until a decode step
costs 1/N of the library's compile: with the real mlc_llm on a CPU (llvm), a 20 s compile and ~8 tokens/s,
N is 160 (issue 40); on an H200 it is in the tens of thousands.

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/speed_check.py [--repeat 3] [--slow 160]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.fidelity import median_seconds
from mlc_farm.checks import speed
from mlc_farm.checks.validate import run_library
from mlc_farm.settings import load_settings
from mlc_farm.tiny_model import write_tiny_llama

OLD_PLAN = {**speed.PLAN, "min_steps": 128, "runs": [3, 3], "stable": -1.0}  # never stable: always 3 runs
NO_SPEEDS = {**speed.PLAN, "decode_steps": 1, "min_steps": 1, "prefill": 1, "runs": [1, 1]}


def toolchain(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mlc_llm", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def check(lib: Path, out: Path, plan: dict, seconds: float, repeat: int) -> float:
    speed.PLAN = plan
    return median_seconds(lambda: run_library(lib, "cpu", out, 3600, speed_seconds=seconds), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow", type=float, help="decode steps a compile lasts (default: the double's own speed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlc-farm-bench-") as tmp:
        root = Path(tmp)
        model, out, lib = write_tiny_llama(root / "model", seed=1), root / "out", root / "lib.so"
        toolchain("convert_weight", str(model), "--quantization", "q4f16_1", "--device", "cpu", "-o", str(out))
        toolchain("gen_config", str(model), "--quantization", "q4f16_1", "--conv-template", "LM", "-o", str(out))
        compile_s = toolchain("compile", str(out / "mlc-chat-config.json"), "--device", "llvm", "-o", str(lib))
        if args.slow:  # a decode step reads every weight once
            weights = sum(p.stat().st_size for p in out.glob("params_shard_*.bin"))
            os.environ["MLC_DOUBLE_BANDWIDTH"] = str(weights / (compile_s / args.slow))
        budget = speed.budget(compile_s, load_settings().speed_seconds)
        plan = speed.PLAN
        without = check(lib, out, NO_SPEEDS, 0.0, args.repeat)
        bounded = check(lib, out, plan, budget, args.repeat)
        old = check(lib, out, OLD_PLAN, 1e9, args.repeat)
    device = f"a decode step 1/{args.slow:g} of the compile" if args.slow else "the double at full speed"
    print(f"{device}; baseline: the library's compile, {compile_s:.2f} s (speed budget {budget:.2f} s)")
    print(f"check run without speeds {without:7.2f} s")
    for name, seconds in (("with speeds, bounded", bounded), ("with the old fixed plan", old)):
        added = seconds - without
        print(f"check run {name:24} {seconds:7.2f} s  (+{added:.2f} s: {added / compile_s:.2f}x the compile)")


if __name__ == "__main__":
    main()
