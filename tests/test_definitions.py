"""Every Prefect task and flow of the farm is pinned to retries=0: the one retry layer is around each service
call, and a failing compile must never run again because an operator set PREFECT_TASKS_DEFAULT_RETRIES."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

LIST = """
import importlib, json, pkgutil
from prefect import Flow, Task
from mlc_farm import flows, tasks
modules = [f"{p.__name__}.{i.name}" for p in (flows, tasks) for i in pkgutil.iter_modules(p.__path__)]
found = {}
for name in modules:
    for obj in vars(importlib.import_module(name)).values():
        if isinstance(obj, (Flow, Task)):
            found[f"{type(obj).__name__} {obj.name}"] = obj.retries
print(json.dumps(found))
"""


def test_every_task_and_flow_has_zero_retries_whatever_the_defaults() -> None:
    env = {**os.environ, "PREFECT_TASKS_DEFAULT_RETRIES": "3", "PREFECT_FLOWS_DEFAULT_RETRIES": "3"}
    done = subprocess.run([sys.executable, "-c", LIST], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    expected = {"Flow nightly-build", "Flow build-library", "Task build", "Task dispatch"}
    assert len(found) >= 10 and expected <= set(found)
    assert {name: retries for name, retries in found.items() if retries != 0} == {}


def test_the_unit_tests_alone_start_no_prefect_server(tmp_path: Path) -> None:
    """`pytest tests/test_schedule.py` is a fast loop: no server boots for tests that do not need one; and a run
    leaves nothing in its TMPDIR (its keys, Prefect homes and pytest's own directories go with it)."""
    (tmp := tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_schedule.py"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert "the shared Prefect test server starts" not in done.stdout
    assert list(tmp.iterdir()) == []


GROUPED = """
import os, pytest
pytestmark = pytest.mark.xdist_group("one-store")

@pytest.fixture(scope="module")
def made():
    with open(os.environ["MADE_LOG"], "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")

@pytest.mark.parametrize("i", range(6))
def test_grouped(made, i):
    pass
"""


def test_a_grouped_module_makes_what_it_shares_once(tmp_path: Path) -> None:
    """scripts/test.sh's --dist loadgroup gives an xdist_group to one worker, so its module fixture (a store
    built once, tests/test_forgery.py) is made once per run: a pytest that ignores the group makes it per worker."""
    (tests := tmp_path / "grouped").mkdir()
    (tests / "test_grouped.py").write_text(GROUPED)
    (tests / "test_alone.py").write_text("".join(f"def test_{i}():\n    pass\n" for i in range(6)))
    env = {**os.environ, "MADE_LOG": str(tmp_path / "made.log")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist",
                           "loadgroup", "--rootdir", str(tests), "-c", os.devnull, str(tests)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert len((tmp_path / "made.log").read_text().split()) == 1
