"""`pip install .` adds exactly one top-level package: mlc_farm, with the top-level flows/ and tasks/ of prefect.yaml
as mlc_farm.flows and mlc_farm.tasks, every package under it, and the work pools' templates and fidelity's text
as package data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.test_structure import _sources


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_and_its_data(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    [wheel] = tmp_path.glob("mlc_farm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("mlc_farm-")} == {"mlc_farm"}
    for needed in ("flows/nightly.py", "flows/workers.py", "tasks/builds.py", "toolchain/scripts/run_library.py", "toolchain/scripts/probe.py", "matrix/eval/fidelity-v1.txt",
                   "farm/templates/docker-cuda.json", "farm/templates/kubernetes-rocm.json", "cli/__main__.py"):  # fmt: skip
        assert f"mlc_farm/{needed}" in names, needed
    assert not [n for n in names if n.startswith("tests/") or "/double/" in n]  # the double is never shipped
    sources = {p.relative_to(ROOT).as_posix() for p in _sources() if p.parent.name != "double"}
    assert sources - set(names) == set()  # every package under mlc_farm, found by setuptools


def test_the_core_never_imports_the_flows_or_tasks() -> None:
    core = [p for p in _sources() if p.relative_to(ROOT).parts[1] not in ("flows", "tasks", "cli")]
    offenders = [p.name for p in core if "mlc_farm.flows" in p.read_text() or "mlc_farm.tasks" in p.read_text()]
    assert offenders == []


def test_prefect_yaml_entrypoints_are_the_top_level_flows() -> None:
    """A Prefect user finds the flows where the design card puts them; each entrypoint names a flow there."""
    import yaml

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    entrypoints = {d["entrypoint"] for d in deployments}
    assert entrypoints and all(e.startswith("flows/") for e in entrypoints), entrypoints
    for entrypoint in entrypoints:
        path, _, name = entrypoint.partition(":")
        assert f"def {name}(" in (ROOT / path).read_text(), entrypoint
