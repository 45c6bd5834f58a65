"""Shared fixtures: an isolated Prefect home, the mlc_llm test double on PYTHONPATH, tiny models."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlc_farm.errors import StackError
from mlc_farm.farm.stack import Service, free_ports, port_taken_in, start_prefect_server, wait_for_prefect
from mlc_farm.tiny_model import write_tiny_llama
from mlc_farm.trust.dsse import new_private_key
from tests.helpers import DOUBLE, MLC_LLM_SOURCE, ROOT, WAITS_ON_PREFECT, s3_client
from tests.hub_server import LocalHub
from tests.seaweed import SeaweedS3

TINY_MATRIX = """
quantizations: [q4f16_1, q0f16]
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cpu}
  - {name: vulkan, family: vulkan, target: "vulkan:generic", pool: mlc-cpu}
models:
  - {id: tiny-llama-a, source: {path: models/a}, conv_template: LM}
  - {id: tiny-llama-b, source: {path: models/b}, conv_template: LM}
"""

# The tests start ~2,000 Python processes that import NumPy (the double, the toolchain scripts); with its default
# of a thread per core, OpenBLAS spent ~0.09 CPU s of each import on starting and parking its threads. The tests'
# arithmetic is on matrices of a few hundred numbers: one thread does it.
os.environ["OPENBLAS_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny Llamas of one architecture, different weights: models/a and models/b."""
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_llama(root / "models" / "a", seed=1)
    write_tiny_llama(root / "models" / "b", seed=2)
    return root


_SERVER: dict[str, Service] = {}
# A Prefect home whose database a temporary server has already set up (migrations, block types): a server's
# first start spends ~15 CPU s on that (on this machine's 2 cores), a start in a home made ready ~7. Made once per
# run (see `_ready_home`) and copied: into every slow test's home (its embedded builds start from it), and into
# the shared server's.
_BOOT = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prefect-boot")
_BOOTING: dict[str, Future[Any]] = {}
_ANSWERED: set[str] = set()  # the URLs of the shared servers that answered a test


def _set_up_home(home: Path) -> None:
    """Start and stop a temporary server in `home`, as `mlc-farm build` does (in a process of its own: the
    tests' environment is theirs)."""
    code = "import pathlib, mlc_farm.farm.stack as s; s.start_temporary_prefect(pathlib.Path(sys.argv[1])).stop()"
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1"}
    subprocess.run([sys.executable, "-c", f"import sys; {code}", str(home / "logs")], env=env, timeout=300, check=True)


def _ready_home() -> Path:
    """The run's ready Prefect home, in its temporary root. The first process of the run to ask (an xdist worker,
    or the only process) makes it, under a lock that the others wait on."""
    root = Path(tempfile.gettempdir())
    ready = root / "prefect-home-ready"
    with (root / "prefect-home-ready.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.is_dir():
            making = Path(tempfile.mkdtemp(prefix="prefect-home-making-"))
            _set_up_home(making)
            making.rename(ready)
    return ready


def _copy_home(ready: Path, into: Path) -> None:
    shutil.copytree(ready, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("logs"))


# The loops of the shared server that nothing on it needs: no deployment on it keeps a schedule (test_pool_check
# deletes the nightly it deploys), no run on it is paused, and none is cancelled through the API. Each loop wakes
# every 5-60 s: together 0.3 CPU s a minute of an idle server (1.4 with them, 1.1 without; measured over 3 minutes).
_SHARED_SERVER_SETTINGS = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in
                           ("SCHEDULER", "LATE_RUNS", "PAUSE_EXPIRATIONS", "CANCELLATION_CLEANUP")}  # fmt: skip


def _start_shared_server() -> None:
    home = Path(tempfile.mkdtemp(prefix="mlc-farm-prefect-"))
    print(f"\nmlc-farm tests: the shared Prefect test server starts in {home}")
    _copy_home(_ready_home(), home)
    _SERVER["prefect"] = _shared_server(home)


def _shared_server(home: Path) -> Service:
    database = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return start_prefect_server(home, database, free_ports(1)[0], wait=False, settings=_SHARED_SERVER_SETTINGS)


KEY_DIR = pytest.StashKey[Path]()
TMP_ROOT = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """One temporary root for the whole run (TMPDIR, inherited by the xdist workers and every process the tests
    start, so a killed build's leftovers land there too), removed when the run ends: the suite leaves nothing in
    /tmp. xdist gives its workers an 80-column terminal size: the CLI's consoles (made when the tests import them)
    must see what a pipe sees, as in a run without workers. Every build and pull of the run (module fixtures
    included) signs and trusts one farm key, as a farm's machines do; tests of the keys themselves unset it."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers (a test's own pytest too)
        config.stash[TMP_ROOT] = root = Path(tempfile.mkdtemp(prefix="mlc-farm-tests-"))
        root.chmod(0o711)  # PostgreSQL's own user (the farm's stack drops root for it) passes through to its data
        os.environ["TMPDIR"] = tempfile.tempdir = str(root)
        # The settings file of a developer's quick start (./mlc-farm.env) is theirs, not the tests'.
        os.environ["MLC_FARM_SETTINGS_FILE"] = str(root / "no-settings-file.env")
    config.stash[KEY_DIR] = Path(tempfile.mkdtemp(prefix="mlc-farm-key-"))  # 0700; removed when the run ends
    key = config.stash[KEY_DIR] / "farm.pem"
    key.touch(mode=0o600)
    key.write_bytes(new_private_key())
    os.environ["MLC_FARM_SIGNING_KEY"] = str(key)
    # Prefect's console log handler keeps the stderr of the moment Prefect sets up logging: here, before any
    # test's output is captured, not inside the first test that runs a flow (whose capture is closed after it).
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    import prefect.logging.configuration

    prefect.logging.configuration.setup_logging()


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's signing key goes with it, and (once the workers are gone) the run's temporary root."""
    if KEY_DIR in config.stash:
        shutil.rmtree(config.stash[KEY_DIR], ignore_errors=True)
    if TMP_ROOT in config.stash:
        shutil.rmtree(config.stash[TMP_ROOT], ignore_errors=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the tests are chosen, and only for what they need: the ready Prefect home of the slow tests, and the
    shared Prefect test server (in a copy of that home), made in the background while the unit tests run (the
    tests that need the server run last, see below)."""
    if any(item.get_closest_marker("slow") for item in session.items):
        _BOOTING["home"] = _BOOT.submit(_ready_home)
    if any("prefect_api" in getattr(item, "fixturenames", ()) for item in session.items):
        _BOOTING["server"] = _BOOT.submit(_start_shared_server)


def pytest_sessionfinish(session: pytest.Session) -> None:
    for booting in _BOOTING.values():
        with contextlib.suppress(Exception):  # a failed start has failed the tests that needed it
            booting.result()
    if server := _SERVER.pop("prefect", None):
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)  # what the in-process flows still queue, before the server goes
        EventsWorker.drain_all(timeout=10)
        answered = server.url not in _ANSWERED or _answers(server.url)  # (one that no test waited on may be booting)
        server.stop()
        if not answered:
            _keep_log_of_dead(server, "prefect")
        shutil.rmtree(Path(server.log).parent, ignore_errors=True)


DEAD_SERVER_LOG = "shared-server-stopped-"


def _keep_log_of_dead(server: Service, name: str) -> None:
    """A shared server stopped during the run: its log is kept for the run's summary, which prints it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    shutil.copy(server.log, Path(tempfile.gettempdir()) / f"{DEAD_SERVER_LOG}{name}-{worker}.log")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10):
            return True
    except OSError:
        return False


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """A shared server that stopped during the run fails the tests that needed it afterwards (`cannot reach`,
    `connection refused`): its log's end says why (seen once each, for Prefect and for SeaweedFS)."""
    for log in sorted(config.stash[TMP_ROOT].glob(f"{DEAD_SERVER_LOG}*.log")) if TMP_ROOT in config.stash else []:
        terminalreporter.write_sep("-", f"{log.stem}: the end of its log")
        terminalreporter.write_line("\n".join(log.read_text(errors="replace").splitlines()[-60:]))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The xdist groups first: each runs on one worker, one test after another (those that wait on Prefect: minutes),
    and started last it would be the run's tail. Then the other tests that run flows go last, once the shared
    server has had the unit tests' time to boot; in each part the slow tests first, so that the workers end on
    short tests (no long one left running alone)."""
    items.sort(key=lambda item: (item.get_closest_marker("xdist_group") is None,
                                 "prefect_api" in getattr(item, "fixturenames", ()),
                                 item.get_closest_marker("slow") is None))  # fmt: skip


# How far the waits-on-prefect group runs ahead of the other tests for CPU (a `nice` difference): see below.
AHEAD = 10


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """The waits-on-prefect group is the run's critical path (minutes of flow runs, each a Python process that
    imports Prefect), and on 2 cores the other workers' tests took its CPU: it ran at about half its speed alone
    (the pool check 209 s in CI, 109 s alone). So it runs AHEAD of them. As root (CI here), its worker raises its
    own priority and its shared Prefect server's for the group's tests, and the others keep the priority of any
    process: on a machine that also runs another job, they share it with that job as before. Otherwise a worker
    can only lower its own: before its first test outside the group (the group runs first, on one worker), and
    for good. A priority reaches every process the test then starts (Linux keeps it per thread: the main one
    here)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    group = item.get_closest_marker("xdist_group")
    ahead = group is not None and group.args == WAITS_ON_PREFECT.mark.args
    if os.geteuid() == 0:
        os.setpriority(os.PRIO_PROCESS, 0, -AHEAD if ahead else 0)
        if ahead and "server" in _BOOTING:
            with contextlib.suppress(Exception):  # a server that failed to start fails the tests that need it
                _BOOTING["server"].result()
                os.setpriority(os.PRIO_PGRP, _SERVER["prefect"].pid, -AHEAD)  # its own session: all its threads
    elif not ahead and os.getpriority(os.PRIO_PROCESS, 0) < AHEAD:
        os.setpriority(os.PRIO_PROCESS, 0, AHEAD)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One real Prefect server (SQLite) for the whole run of this process (each xdist worker has its own): every
    flow, in this process or in a CLI subprocess, runs against it instead of starting a temporary server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    _BOOTING["server"].result()
    server = _SERVER["prefect"]
    try:
        wait_for_prefect(server)
    except StackError:  # its port, free when chosen, was taken before it bound it (a busy machine): another
        if not port_taken_in(Path(server.log), since=0)():
            raise
        server = _SERVER["prefect"] = _shared_server(Path(server.log).parent)
        wait_for_prefect(server)
    _ANSWERED.add(server.url)
    os.environ["PREFECT_API_URL"] = server.url
    with temporary_settings({PREFECT_API_URL: server.url}):
        yield server.url


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every test: its own Prefect home, no telemetry, the double as `mlc_llm`; tests that run flows ask for
    `prefect_api` and run against the shared server, the others see no Prefect API at all."""
    if "prefect_api" not in request.fixturenames:
        monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))
    if request.node.get_closest_marker("slow") and "home" in _BOOTING:
        _copy_home(_BOOTING["home"].result(), tmp_path / "prefect-home")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.setenv("PREFECT_LOGGING_LEVEL", "WARNING")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(DOUBLE), str(ROOT)]))
    # The pool can build webgpu (the double's emcc, a stand-in mlc_wasm_runtime.bc) and fat CUDA binaries (the
    # double's nvcc, first: whatever nvcc this machine has is not the one the tests expect).
    monkeypatch.setenv("PATH", os.pathsep.join([str(DOUBLE / "bin"), os.environ.get("PATH", "")]))
    monkeypatch.setenv("MLC_LLM_SOURCE_DIR", str(MLC_LLM_SOURCE))
    monkeypatch.setenv("MLC_FARM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MLC_FARM_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("MLC_FARM_CACHE", str(tmp_path / "cache"))
    # A check times its speeds for 0.2 s, not the 1 s a fast compile gets: a third of a tiny build's CPU went
    # to timing figures only the speed tests read (they ask for `product_speed_timing`).
    monkeypatch.setenv("MLC_FARM_SPEED_SECONDS", "0.2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in (
        "MLC_FARM_MLC_LLM",
        "MLC_FARM_POOL_MLC_LLM",
        "TVM_NDK_CC",
        "MLC_DOUBLE_FAIL",
        "MLC_DOUBLE_HANG",
        "MLC_DOUBLE_SLEEP",
        "MLC_DOUBLE_LOG",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def product_speed_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The product's speed budget (MLC_FARM_SPEED_SECONDS unset): for tests that read or compare speed figures."""
    monkeypatch.delenv("MLC_FARM_SPEED_SECONDS")


@pytest.fixture
def model_a(tiny_models: Path, tmp_path: Path) -> Path:
    """A private copy of models/a, for tests that run the toolchain on it directly (it writes into its input)."""
    return Path(shutil.copytree(tiny_models / "models" / "a", tmp_path / "model-a"))


@pytest.fixture
def tiny_matrix(tiny_models: Path, tmp_path: Path) -> Path:
    """examples/tiny-cpu.yaml's shape: 2 models x 2 quantizations x 2 devices, next to the tiny models."""
    path = tiny_models / f"matrix-{tmp_path.name}.yaml"
    path.write_text(TINY_MATRIX)
    return path


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One real SeaweedFS S3 server for the whole session, on free ports of 127.0.0.1."""
    server = SeaweedS3.start(tmp_path_factory.mktemp("seaweed"))
    yield server
    died = not server.service.alive()
    server.stop()
    if died:
        _keep_log_of_dead(server.service, "seaweed")


@pytest.fixture
def s3_store_url(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the server, with the AWS environment pointing at it; returns s3://bucket/farm."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    bucket = f"t{uuid.uuid4().hex[:16]}"
    s3_client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/farm"


TOKEN = "hf_farmTestToken0123456789abcdef"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[LocalHub]:
    server = LocalHub(TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("MLC_FARM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    assert server.state.unknown == [], "the client used endpoints the test server lacks"
    server.close()
