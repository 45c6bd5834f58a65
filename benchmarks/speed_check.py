"""What the speed check adds to a cell's check (run by hand): seconds of the check's run in the toolchain's
interpreter (`validate.run_library`: load, liveness, speeds, MLCEngine) with the speed plan, against the same
run with no timed steps, and against a library's build.

The baselines, measured in the same run: one tiny cell built end to end (`mlc-farm build`, toolchain double,
Prefect's temporary server), and the check's run without speeds (the timed phases cut to one token and no
timed runs: what the check cost before). The double's steps cost its host math plus the time to read its
weights at MLC_DOUBLE_BANDWIDTH (default 1 GB/s); on a real GPU a 1.1B model decodes at ~600 tokens/s through
the VM (shared/mlc-reference), so the plan's 4 x 128 VM steps and as many MLCEngine tokens take ~2 s, against a
compile of minutes.

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/speed_check.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.fidelity import built_cell, median_seconds
from mlc_farm.checks import speed
from mlc_farm.checks.validate import run_library


def toolchain(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mlc_llm", *args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlc-farm-bench-") as tmp:
        root = Path(tmp)
        build_s = built_cell(root)
        out, lib = root / "out", root / "lib.so"
        model = str(root / "model")
        toolchain("convert_weight", model, "--quantization", "q4f16_1", "--device", "cpu", "-o", str(out))
        toolchain("gen_config", model, "--quantization", "q4f16_1", "--conv-template", "LM", "-o", str(out))
        toolchain("compile", str(out / "mlc-chat-config.json"), "--device", "llvm", "-o", str(lib))
        with_speed = median_seconds(lambda: run_library(lib, "cpu", out, 600), args.repeat)
        speed.DECODE_STEPS, speed.TIMED_RUNS, speed.PREFILL_TOKENS = 1, 0, 1
        without = median_seconds(lambda: run_library(lib, "cpu", out, 600), args.repeat)
        added = with_speed - without
        print(f"baseline: one tiny cell built end to end in {build_s:.1f} s")
        print(f"check run without speeds {without:6.2f} s")
        print(f"check run with speeds    {with_speed:6.2f} s  (+{added:.2f} s: {with_speed / without:.2f}x the run "
              f"without, {added / build_s:.3f}x the cell's build)")  # fmt: skip


if __name__ == "__main__":
    main()
