"""`pip install .` adds exactly one top-level package: mlc_farm, with the flows and tasks of prefect.yaml in
mlc_farm.orchestrate, every package under it, and the work pools' templates and fidelity's text as package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_and_its_data(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("mlc_farm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("mlc_farm-")} == {"mlc_farm"}
    for needed in ("orchestrate/nightly.py", "orchestrate/workers.py", "orchestrate/build_tasks.py", "toolchain/scripts/run_library.py", "toolchain/scripts/probe.py", "matrix/eval/fidelity-v1.txt",
                   "farm/templates/docker-cuda.json", "farm/templates/kubernetes-rocm.json", "cli/__main__.py"):  # fmt: skip
        assert f"mlc_farm/{needed}" in names, needed
    assert not [n for n in names if n.startswith("tests/") or "/double/" in n]  # the double is never shipped
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mlc_farm").rglob("*.py")}
    assert sources - set(names) == set()  # every package under mlc_farm, found by setuptools


def test_the_core_never_imports_the_flows_or_tasks() -> None:
    core = [p for p in (ROOT / "mlc_farm").rglob("*.py") if p.parts[-2] not in ("orchestrate", "cli")]
    offenders = [p.name for p in core if "mlc_farm.orchestrate" in p.read_text()]
    assert offenders == []
