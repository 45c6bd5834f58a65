"""A `mlc-farm build` with nothing to build, against `mlc-farm plan` of the same matrix (run by hand).

One tiny CPU cell is built first (toolchain double, Prefect's temporary server); then both commands run
`--repeat` times each, as a user runs them, in fresh processes, with no Prefect API set. The goal (issue 40):
the no-op build within 2x of the plan, median against median.

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/noop_build.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.fidelity import built_cell, median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.pop("PREFECT_API_URL", None)  # as on a laptop: a build would start its temporary server
    with tempfile.TemporaryDirectory(prefix="mlc-farm-bench-noop-") as tmp:
        root = Path(tmp)
        first = built_cell(root)
        where = ["--matrix", str(root / "matrix.yaml"), "--store", str(root / "store")]

        def command(name: str) -> None:
            done = subprocess.run([sys.executable, "-m", "mlc_farm.cli", name, *where], capture_output=True,
                                  text=True, env=os.environ)  # fmt: skip
            if done.returncode or (name == "build" and "0 builds to run" not in done.stdout):
                sys.exit(f"`mlc-farm {name}` did not end as a no-op:\n{done.stdout}{done.stderr}")

        build = median_seconds(lambda: command("build"), args.repeat)
        plan = median_seconds(lambda: command("plan"), args.repeat)
    print(f"first build (1 cell, with work): {first:.2f} s")
    print(f"no-op build: {build:.2f} s; plan: {plan:.2f} s (median of {args.repeat})")
    print(f"no-op build / plan: {build / plan:.2f}x (goal: at most 2x)")


if __name__ == "__main__":
    main()
