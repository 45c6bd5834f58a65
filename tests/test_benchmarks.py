"""Every benchmark still runs (issue 29): each at its smallest size, as a user runs it by hand, so none rots
unseen. What they measure is read by people; here only that they finish and print their comparison."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import DOUBLE, ROOT

pytestmark = pytest.mark.slow

SMALLEST = {
    "plan.py": (["--models", "1"], "no-op nightly / work:"),
    "noop_build.py": (["--repeat", "1"], "no-op build / plan:"),
    "schedule.py": (["--seeds", "1"], "critical-path: makespan / bound"),
    "fingerprints.py": (["--models", "3", "--nights", "5", "--changes", "1"], "fingerprint keys:"),
    "fidelity.py": (["--positions", "16", "--repeat", "1"], "kl_mean"),
    "signing.py": (["--files", "5", "--repeat", "1"], "model.sig"),
    "speed_check.py": (["--repeat", "1", "--slow", "160"], "check run with speeds, bounded"),
    "transfer.py": (
        ["--shards", "1", "--shard-mb", "1", "--small", "3", "--rounds", "1"],
        "download: mlc-farm vs boto3 loop",
    ),
}


def test_every_benchmark_is_run_here() -> None:
    assert set(SMALLEST) == {p.name for p in (ROOT / "benchmarks").glob("*.py")}


@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_the_benchmark_runs_at_its_smallest_size(name: str) -> None:
    args, said = SMALLEST[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(DOUBLE), str(ROOT)])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)  # fmt: skip
    assert done.returncode == 0 and said in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
