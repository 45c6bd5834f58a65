"""What fidelity adds to a build (run by hand): seconds per library for the cell's check (the run check and
the teacher-forced pass over the evaluation tokens) against the validation run alone, and the reference's
cost per source, each the median of --repeat runs.

The baseline, measured in the same run, is the existing validation run: the library loaded with its weights,
5 timed runs of a prefill and 8 decode steps (`validate.run_library` without a request). With the toolchain
double (`PYTHONPATH=tests/double:.`) the numbers are the double's NumPy Llama on the tiny model; with
MLC_FARM_MLC_LLM pointing at a real toolchain they are that toolchain's.

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/fidelity.py [--positions 128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mlc_farm.checks import fidelity, fidelity_metrics, validate
from mlc_farm.matrix import fidelity_rules
from mlc_farm.tiny_model import write_tiny_llama
from mlc_farm.toolchain.invoke import command, in_toolchain

ONE_CPU_CELL = """
quantizations: [q4f16_1]
devices: [{name: cpu, family: cpu, target: llvm}]
models: [{id: tiny, source: {path: model}, conv_template: LM}]
"""


def built_cell(root: Path) -> float:
    """A baseline other benchmarks measure against: one tiny CPU cell built end to end in `root` (`mlc-farm
    build`, the toolchain double, Prefect's temporary server, caches in `root`), into `root/store`; seconds."""
    os.environ["MLC_FARM_CACHE"] = str(root / "cache")
    write_tiny_llama(root / "model", seed=1)
    (root / "matrix.yaml").write_text(ONE_CPU_CELL)
    start = time.perf_counter()
    built = subprocess.run([sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(root / "matrix.yaml"),
                            "--store", str(root / "store")], capture_output=True, text=True, env=os.environ)  # fmt: skip
    seconds = time.perf_counter() - start
    if built.returncode:
        sys.exit(f"the baseline build failed:\n{built.stdout}{built.stderr}")
    return seconds


def median_seconds(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, default=fidelity_rules.POSITIONS)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quantization", default="q4f16_1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlc-farm-bench-fidelity-") as tmp:
        work = Path(tmp)
        source = write_tiny_llama(work / "source")
        built = work / "built"
        mlc = command()
        for step in (["convert_weight", str(source), "--quantization", args.quantization, "-o", str(built)],
                     ["gen_config", str(source), "--quantization", args.quantization, "--conv-template", "LM",
                      "-o", str(built)],
                     ["compile", str(built / "mlc-chat-config.json"), "--device", "llvm", "-o", str(work / "lib.so")]):  # fmt: skip
            subprocess.run([*mlc, *step], check=True, capture_output=True)
        tokens = fidelity_metrics.eval_tokens(source / "tokenizer.json", args.positions, 1000)
        ref_request = validate.write_request(work / "ref.json", tokens.tokens, None)

        def reference() -> dict:
            return in_toolchain("reference.py", [str(source), str(ref_request)], 600, ("ref", "ref"))

        ref = fidelity.Distributions(method="bench", tokens=tokens.tokens, seeded=tokens.seeded, **reference())
        request = validate.write_request(work / "req.json", tokens.tokens, ref.top_ids)
        lib = work / "lib.so"
        baseline = median_seconds(lambda: validate.run_library(lib, "cpu", built, 600), args.repeat)
        check = median_seconds(lambda: validate.run_library(lib, "cpu", built, 600, request), args.repeat)
        ref_seconds = median_seconds(reference, args.repeat)
        out = validate.run_library(lib, "cpu", built, 600, request)
        measured = fidelity_metrics.compare(ref, fidelity.Distributions(method="lib", tokens=tokens.tokens,
                                                                seeded=tokens.seeded, **out["distributions"]))  # fmt: skip
    print(f"toolchain: {' '.join(command())} ({sys.version.split()[0]}); {args.quantization}, "
          f"{args.positions} positions ({tokens.describe()}), median of {args.repeat}")  # fmt: skip
    print(f"validation run alone (baseline):     {baseline:7.2f} s")
    print(f"cell check (run + fidelity pass):    {check:7.2f} s   {check / baseline:5.2f}x the baseline")
    print(f"  of which fidelity's pass:          {check - baseline:7.2f} s   {(check - baseline) / baseline:5.2f}x")
    print(
        f"reference per source (transformers): {ref_seconds:7.2f} s   {ref_seconds / baseline:5.2f}x, once per source"
    )
    print(json.dumps({"top1": round(measured.top1, 3), "kl_mean": round(measured.kl_mean, 4)}))


if __name__ == "__main__":
    main()
