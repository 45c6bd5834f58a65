"""End to end with the Prefect flow (embedded temporary server) and the toolchain double, through the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mlc_farm.records.reads import entries
from mlc_farm.store.local import LocalStore
from tests.helpers import ROOT, alive, cli, run_cli, toolchain_calls, unhashed

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def steps(log: Path) -> Counter:
    """The toolchain steps run on the matrix's own sources and builds (not on conversion twins)."""
    return Counter(call["step"] for call in toolchain_calls(log) if "mlc-farm-twin-" not in " ".join(call["argv"]))


def build(matrix: Path, store: Path, calls: Path, *extra: str, env: dict | None = None):
    return cli("build", "--matrix", str(matrix), "--store", str(store), *extra,
               env={"MLC_DOUBLE_LOG": str(calls), "COLUMNS": "200", **(env or {})})  # fmt: skip  # a wide terminal


def assert_store_whole(store: Path) -> None:
    """Every catalog entry points at records that exist; every record's blobs exist."""
    s = LocalStore(store)
    for entry in entries(s):
        for key in [entry.convert, entry.config, *(lib.key for lib in entry.libs.values())]:
            assert (store / "builds" / f"{key}.json").is_file()
    for name in s.names("builds/"):
        record = json.loads((store / name).read_text())
        for f in record["files"] + [record["log"]]:
            assert s.has_blob(f["sha256"]), f"{name} -> {f['path']}"


def test_build_reuse_and_pull(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    first = build(tiny_matrix, store, calls)
    assert first.returncode == 0, first.stdout + first.stderr
    # 8 cells: weights once per model x quantization, libraries shared by the two models.
    assert steps(calls) == {"convert_weight": 4, "gen_config": 4, "compile": 4}
    assert (
        "8 cells: 8 ok (convert 4 built; config 4 built; library 4 built; reference 2 built; check 8 built)"
        in first.stdout
    )
    assert all(
        "--device" in c["argv"] and "cpu" in c["argv"] for c in toolchain_calls(calls) if c["step"] == "convert_weight"
    )

    plan = json.loads(cli("plan", "--matrix", str(tiny_matrix), "--store", str(store), "--format", "json").stdout)
    assert plan["counts"] == {
        "cells": 8, "unresolved_cells": 0, "convert_builds": 4, "config_builds": 4, "library_builds": 4,
        "convert_builds_in_store": 4, "config_builds_in_store": 4, "library_builds_in_store": 4,
        "reference_builds": 2, "reference_builds_in_store": 2, "check_builds": 8, "check_builds_in_store": 8,
        "libraries_shared": 4,
    }  # fmt: skip
    assert plan["toolchain"]["mlc_llm_version"] == "0.20.0.dev0"

    calls.unlink()
    # A build with nothing to build ends at its plan without Prefect (its API here answers nothing), and still
    # finishes what a killed run left: a catalog entry it did not write, the page.
    entry = store / "catalog" / "tiny-llama-b" / "q4f16_1.json"
    written = entry.read_bytes()
    entry.unlink()
    (store / "index.html").unlink()
    second = build(tiny_matrix, store, calls, env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert (
        second.returncode == 0
        and "8 cells: 8 ok (convert 4 reused; config 4 reused; library 4 reused; reference 2 reused; check 8 reused)"
        in second.stdout
    ), second.stdout + second.stderr
    assert second.stdout.startswith("0 builds to run, 22 reused"), second.stdout
    assert steps(calls) == {} and (store / "index.html").is_file()
    assert json.loads(entry.read_bytes())["libs"] == json.loads(written)["libs"]

    out = tmp_path / "pulled"
    tty = {
        "TTY_COMPATIBLE": "1",
        "TTY_INTERACTIVE": "1",
        "COLUMNS": "160",
    }  # as on a terminal: the byte progress bar is drawn
    done = cli("pull", "tiny-llama-b", "q4f16_1", "--device", "cpu", "-o", str(out), "--store", str(store), env=tty)
    assert done.returncode == 0, done.stderr
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != "model.sig")
    # A one-device pull carries the entry's signature too, and verifies: the other devices' libraries are named.
    checked = cli("verify-signature", str(out))
    assert checked.returncode == 0 and "signed libraries not here" in checked.stdout, checked.stdout + checked.stderr
    bar = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stderr)  # without its colours and cursor moves
    assert "downloading, every sha256 checked" in bar and f"{total / 1000:.1f}/{total / 1000:.1f} kB" in bar, bar
    # What the toolchain writes for this cell, produced again directly: the pulled files are the same bytes.
    direct = tmp_path / "direct"
    src = Path(shutil.copytree(tiny_matrix.parent / "models" / "b", tmp_path / "b"))  # the tool writes into it
    for args in (
        ["convert_weight", str(src), "--quantization", "q4f16_1", "--device", "cpu", "-o", str(direct)],
        ["gen_config", str(src), "--quantization", "q4f16_1", "--conv-template", "LM", "-o", str(direct)],
        [
            "compile",
            str(out / "mlc-chat-config.json"),
            "--device",
            "llvm",
            "--host",
            "x86_64-unknown-linux-gnu",
            "-o",
            str(direct / "lib.so"),
        ],
    ):
        subprocess.run([sys.executable, "-m", "mlc_llm", *args], check=True, capture_output=True)
    pulled = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "model.sig")
    assert (
        pulled[0]
        == f"libs/tiny-llama-b-q4f16_1-cpu-{hashlib.sha256((direct / 'lib.so').read_bytes()).hexdigest()[:12]}.so"
    )
    assert [unhashed(p) for p in pulled] == [
        "libs/tiny-llama-b-q4f16_1-cpu.so", "mlc-chat-config.json", "params_shard_0.bin",
        "tensor-cache.json", "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    for name in pulled[1:]:
        assert (out / name).read_bytes() == (direct / name).read_bytes(), name
    assert (out / pulled[0]).read_bytes() == (direct / "lib.so").read_bytes()

    listing = cli("ls", "--store", str(store))
    assert listing.returncode == 0 and "tiny-llama-a" in listing.stdout and "cpu, vulkan" in listing.stdout
    assert cli("verify", "--store", str(store)).returncode == 0
    assert_store_whole(store)

    # Pulling never merges into, or half-writes, a directory.
    args = ("pull", "tiny-llama-a", "q0f16", "--store", str(store), "-o")
    again = cli(*args, str(out))
    assert again.returncode == 2 and "is not empty: write into a new directory, or add --force" in again.stderr
    assert cli(*args, str(out), "--force").returncode == 0
    assert sorted(unhashed(p.name) for p in (out / "libs").iterdir()) == [
        "tiny-llama-a-q0f16-cpu.so",
        "tiny-llama-a-q0f16-vulkan.so",
    ]
    (tmp_path / "a-file").write_text("x")
    onto_file = cli(*args, str(tmp_path / "a-file"))
    assert (
        onto_file.returncode == 2 and "a file is in the way" in onto_file.stderr and "Traceback" not in onto_file.stderr
    )
    entry = json.loads((store / "catalog" / "tiny-llama-a" / "q0f16.json").read_text())
    record = json.loads((store / "builds" / f"{entry['convert']}.json").read_text())
    shard = store / "blobs" / "sha256" / next(f["sha256"] for f in record["files"] if f["path"] == "params_shard_0.bin")
    shard.write_bytes(bytes([shard.read_bytes()[0] ^ 1]) + shard.read_bytes()[1:])
    broken = cli(*args, str(tmp_path / "fresh"))
    assert broken.returncode == 1 and "is corrupt" in broken.stderr
    assert not (tmp_path / "fresh").exists() and not list(tmp_path.glob(".fresh.pulling-*"))


def test_one_failing_cell_does_not_stop_the_others(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    failing = build(tiny_matrix, store, calls, env={"MLC_DOUBLE_FAIL": "compile:vulkan:generic"})
    assert failing.returncode == 1
    assert "4 of 8 cells failed" in failing.stderr
    # The run's final state message (what `prefect deployment run --watch` shows) names each cell and its log.
    said = " ".join(failing.stderr.split())
    assert "failed: tiny-llama-a q4f16_1 vulkan: compile failed for" in said
    assert "(mlc-farm log tiny-llama-a q4f16_1 vulkan)" in said
    assert steps(calls) == {"convert_weight": 4, "gen_config": 4, "compile": 4}
    rows = [line for line in failing.stdout.splitlines() if line.startswith("│ tiny-llama")]
    assert len(rows) == 8
    assert sorted(" vulkan " in r for r in rows if "failed" in r) == [True] * 4
    served = {(e.model, e.quantization): e for e in entries(LocalStore(store))}
    assert len(served) == 4 and all(set(e.libs) == {"cpu"} for e in served.values())
    # The failure's log is kept in the store, and the summary says where.
    failed = [line for line in failing.stdout.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 4 and all("/vulkan: compile failed for" in line and "exit code 1" in line for line in failed)
    log_blobs = {line.split("blobs/sha256/")[1] for line in failing.stdout.splitlines() if line.startswith("  log: ")}
    assert len(log_blobs) == 2  # one log per failed library build (each shared by two cells)
    texts = [(store / "blobs" / "sha256" / b).read_text() for b in log_blobs]
    assert any("injected failure in compile" in t for t in texts)

    calls.unlink()
    rerun = build(tiny_matrix, store, calls)
    assert rerun.returncode == 0, rerun.stderr
    assert steps(calls) == {"compile": 2}  # only what failed
    served = {(e.model, e.quantization): e for e in entries(LocalStore(store))}
    assert all(set(e.libs) == {"cpu", "vulkan"} for e in served.values())


def test_failed_weights_of_one_model_do_not_sink_the_shared_library(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    done = build(tiny_matrix, store, calls, env={"MLC_DOUBLE_FAIL": "convert_weight:tiny-llama-a"})
    assert done.returncode == 1
    served = {(e.model, e.quantization): e for e in entries(LocalStore(store))}
    assert set(served) == {("tiny-llama-b", "q4f16_1"), ("tiny-llama-b", "q0f16")}
    assert all(set(e.libs) == {"cpu", "vulkan"} for e in served.values())


def test_build_shows_its_progress_live(tiny_matrix: Path, tmp_path: Path) -> None:
    """What a person watching `mlc-farm build` sees: a line per finished build, and the status of the run: done,
    failed, running (with the step each build is in and for how long) and waiting, with the elapsed time."""
    slow = {"MLC_DOUBLE_SLEEP": "2", "MLC_FARM_STATUS_SECONDS": "1"}
    logged = build(tiny_matrix, tmp_path / "s1", tmp_path / "c1", "--model", "tiny-llama-a", env=slow)
    assert logged.returncode == 0, logged.stderr
    text = logged.stdout
    assert "13 builds to run, 0 reused" in text  # 2 convert, 2 config, 4 library, 1 reference, 4 check
    assert re.search(r"^\[\d+:\d\d\] \d+/13 builds done, [12] running, \d+ waiting$", text, re.M)
    assert re.search(r"^  config tiny-llama-a/q\w+: gen_config \d+:\d\d, running \d+:\d\d$", text, re.M)
    assert re.search(r"^  convert tiny-llama-a/q\w+: convert_weight \d+:\d\d, running \d+:\d\d$", text, re.M)
    assert re.search(r"^  library (cpu|vulkan)/q\w+ \(\w+\): compile \d+:\d\d, running", text, re.M)
    assert re.search(r"^\[\d+/13\] ok library \w+/q\w+ \(\w+\) \(at \d+:\d\d\)$", text, re.M)
    assert re.search(r"^\[13/13\] ok check tiny-llama-a/q\w+/\w+ \(at \d+:\d\d\)$", text, re.M)
    assert "4 cells: 4 ok" in text

    # On a terminal the status redraws in place below the finished lines, and is gone at the end.
    tty = {**slow, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    live = build(tiny_matrix, tmp_path / "s2", tmp_path / "c2", "--model", "tiny-llama-a", env=tty)
    assert live.returncode == 0, live.stderr
    assert "\x1b[2K" in live.stdout and "builds done" in live.stdout  # erased and redrawn lines
    assert re.search(r"convert_weight \d+:\d\d, running", live.stdout)


def test_a_failure_keeps_its_log_until_the_key_builds(tiny_matrix: Path, tmp_path: Path) -> None:
    """A failed build leaves a failure record: `mlc-farm log` shows its log by cell or key, gc keeps the log the
    summary linked, and the record goes once the key builds."""
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    failed = build(tiny_matrix, store, calls, "--model", "tiny-llama-a",
                   env={"MLC_DOUBLE_FAIL": "convert_weight:q4f16_1"})  # fmt: skip
    assert failed.returncode == 1
    [link] = {line.split("log: ", 1)[1].strip() for line in failed.stdout.splitlines() if "log: " in line}
    [failure] = [json.loads(p.read_text()) for p in (store / "failures").glob("*.json")]
    assert (
        failure["label"] == "convert tiny-llama-a/q4f16_1" and "injected failure in convert_weight" in failure["error"]
    )
    assert link == f"file://{store}/blobs/sha256/{failure['log']['sha256']}"

    gc = cli("gc", "--min-age-hours", "0", "--store", str(store))
    assert gc.returncode == 0 and Path(link.removeprefix("file://")).is_file()  # the printed link still works

    shown = cli("log", "tiny-llama-a", "q4f16_1", "cpu", "--store", str(store))
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert first.startswith("=== convert tiny-llama-a/q4f16_1 ") and ": FAILED " in first
    assert "convert_weight: working 39" in shown.stdout and "injected failure in convert_weight" in shown.stdout
    by_key = cli("log", failure["key"][:8], "--store", str(store)).stdout
    assert by_key.startswith("=== convert tiny-llama-a/q4f16_1 ") and shown.stdout.startswith(by_key)
    for args, message in [(["zzzzzz"], "a build key is hex"), (["abcdef0123"], "no build or failure with a key"),
                          (["tiny-llama-x", "q4f16_1"], "no build or failure of tiny-llama-x q4f16_1"),
                          (["a", "b", "c", "d"], "expected KEY or MODEL QUANT [DEVICE]")]:  # fmt: skip
        bad = cli("log", *args, "--store", str(store))
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr

    assert build(tiny_matrix, store, calls, "--model", "tiny-llama-a").returncode == 0
    assert not list((store / "failures").glob("*.json"))
    built = cli("log", "tiny-llama-a", "q4f16_1", "cpu", "--store", str(store))
    headers = [line for line in built.stdout.splitlines() if line.startswith("=== ")]
    assert [h.split(" ")[1:3] for h in headers] == [["convert", "tiny-llama-a/q4f16_1"], ["config", "tiny-llama-a/q4f16_1"],
                                                   ["library", "cpu"]]  # fmt: skip
    assert "FAILED" not in built.stdout and "$ " in built.stdout  # each log starts with the command line


def test_killed_build_is_finished_by_the_next_run(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    env = {**os.environ, "MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_SLEEP": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(store)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(list((store / "builds").glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    records_before = len(list((store / "builds").glob("*.json")))
    assert 2 <= records_before < 12, "the kill should land half-way"
    assert_store_whole(store)
    assert cli("verify", "--store", str(store)).returncode == 0

    calls_before = len(toolchain_calls(calls))
    rerun = build(tiny_matrix, store, calls)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list((store / "builds").glob("*.json"))) == 22  # 4 convert, 4 config, 4 library, 2 reference, 8 check
    redone = len(toolchain_calls(calls)) - calls_before
    assert redone < 12  # the finished builds were not run again
    assert "8 cells:" in rerun.stdout and "reused" in rerun.stdout
    assert_store_whole(store)
    assert len(entries(LocalStore(store))) == 4


def test_the_temporary_server_s_flow_runs_send_no_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing watches a temporary server's runs for heartbeats, and Prefect's heartbeat thread holds each flow
    run's end for up to a second: `mlc-farm build` turns them off there, and only there."""
    from prefect.settings import get_current_settings

    from mlc_farm.cli.build import _prefect_api

    monkeypatch.delenv("PREFECT_API_URL")
    beats = get_current_settings().flows.heartbeat_frequency
    assert beats == 180
    with _prefect_api():
        now = get_current_settings()
        assert now.flows.heartbeat_frequency is None and now.api.url and "127.0.0.1" in now.api.url
    assert get_current_settings().flows.heartbeat_frequency == beats


def test_a_dead_temporary_prefect_server_ends_the_build_within_seconds_and_the_rerun_finishes(
    tiny_models: Path, tmp_path: Path
) -> None:
    from tests.helpers import UNPUBLISHED_CELL

    store, calls = tmp_path / "store", tmp_path / "calls.log"
    tiny_matrix = tiny_models / f"one-{tmp_path.name}.yaml"  # one cell: 5 builds, killed after 2
    tiny_matrix.write_text(UNPUBLISHED_CELL)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # its own temporary server
    env |= {"MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_SLEEP": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(store)],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(list((store / "builds").glob("*.json"))) < 2:
            time.sleep(0.2)
        found = subprocess.run(["pgrep", "-f", "prefect.server.api.server:create_app"], capture_output=True,
                               text=True).stdout.split()  # fmt: skip
        server = [int(pid) for pid in found if os.getpgid(int(pid)) != os.getpgid(proc.pid)]  # its own group
        assert server, "the build's temporary server"
        for pid in server:
            with contextlib.suppress(ProcessLookupError):
                if Path(f"/proc/{pid}/environ").read_bytes().find(str(calls).encode()) != -1:
                    os.kill(pid, signal.SIGKILL)  # this build's server (it has the build's environment)
                    began = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - began < 10
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    said = " ".join(stderr.split())
    assert proc.returncode == 3 and "Prefect's temporary server stopped (its log: " in said, said
    assert "Traceback" not in stderr and "HF_ENDPOINT" not in stderr
    time.sleep(1)  # the toolchain steps it stopped are gone: no process with this build's environment is left
    left = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if str(calls).encode() in environ.read_bytes():
                left.append(environ.parent.name)
    assert not left
    calls_before = len(toolchain_calls(calls))
    rerun = build(tiny_matrix, store, calls)
    assert rerun.returncode == 0 and "reused" in rerun.stdout, rerun.stderr
    assert len(toolchain_calls(calls)) - calls_before < 12  # only what was in flight or not started
    assert_store_whole(store)


def test_force_and_a_new_toolchain_rebuild(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    assert build(tiny_matrix, store, calls, "--model", "tiny-llama-a").returncode == 0
    assert steps(calls) == {"convert_weight": 2, "gen_config": 2, "compile": 4}
    calls.unlink()
    assert build(tiny_matrix, store, calls, "--model", "tiny-llama-a", "--force").returncode == 0
    assert steps(calls) == {"convert_weight": 2, "gen_config": 2, "compile": 4}
    calls.unlink()
    nightly = build(tiny_matrix, store, calls, "--model", "tiny-llama-a", env={"MLC_DOUBLE_VERSION": "0.21.0.dev3"})
    assert nightly.returncode == 0
    # A new toolchain: configs and libraries again; the weights only if its converter changed (tests/test_fingerprints.py)
    assert steps(calls) == {"gen_config": 2, "compile": 4}
    entry = entries(LocalStore(store))[0]
    config = json.loads((store / "builds" / f"{entry.config}.json").read_text())
    assert config["toolchain"]["mlc_llm_version"] == "0.21.0.dev3"
    calls.unlink()
    versioned = tiny_matrix.read_text() + "convert_identity: toolchain\n"
    (tmp_path / "versioned.yaml").write_text(versioned)
    shutil.copytree(tiny_matrix.parent / "models", tmp_path / "models", dirs_exist_ok=True)
    again = build(tmp_path / "versioned.yaml", store, calls, "--model", "tiny-llama-a",
                  env={"MLC_DOUBLE_VERSION": "0.21.0.dev3"})  # fmt: skip
    assert again.returncode == 0 and steps(calls) == {"convert_weight": 2}  # version keys: converted again


HANG_CONVERT = "convert_weight:mlc-farm-build-"  # a build's convert_weight hangs (not a conversion twin's)


def hanging_steps(calls: Path, timeout: float = 240) -> list[int]:
    """Wait until the double has started (and hangs in) a build's convert_weight; the pids of those steps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        calls_now = [c for c in toolchain_calls(calls) if "mlc-farm-twin-" not in " ".join(c["argv"])]
        if pids := [c["pid"] for c in calls_now if c["step"] == "convert_weight"]:
            return pids
        time.sleep(0.2)
    raise AssertionError("no convert_weight step started")


def runs_of(pid: int) -> list:
    """The Prefect flow runs (with their task runs) of the `mlc-farm build` process `pid`, from the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        tag = f"mlc-farm-process:{socket.gethostname()}:{pid}"
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
        return [
            (run, client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))))
            for run in runs
        ]


def _shown_running(pid: int) -> bool:
    return any(run.state.is_running() and any(t.state.is_running() for t in tasks) for run, tasks in runs_of(pid))


def test_a_killed_build_takes_its_toolchain_step_with_it(tiny_matrix: Path, tmp_path: Path) -> None:
    """The toolchain step runs in its own session (so a timeout kills its compilers), yet dies with the build;
    Prefect still shows the killed build Running, until the next build marks it Crashed."""
    calls = tmp_path / "calls.log"
    env = {**os.environ, "MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_HANG": HANG_CONVERT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(tmp_path / "s")],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        steps_running = hanging_steps(calls)
        assert steps_running and all(alive(pid) for pid in steps_running)
        # Task runs reach the server as events, recorded a moment later: the kill waits until the server shows them
        # (a kill before that loses them, and nothing would be left Running to test).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _shown_running(proc.pid):
            time.sleep(0.5)
        proc.kill()  # the build process alone, as the OOM killer would
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in steps_running):
            time.sleep(0.2)
        assert not any(alive(pid) for pid in steps_running)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    [(run, task_runs)] = runs_of(proc.pid)
    assert run.state.is_running() and any(t.state.is_running() for t in task_runs)
    again = build(tiny_matrix, tmp_path / "s", calls, "--model", "tiny-llama-b")
    assert again.returncode == 0, again.stderr
    assert "marked 1 flow runs of killed builds Crashed" in again.stdout
    [(run, task_runs)] = runs_of(proc.pid)
    assert run.state.is_crashed() and f"(pid {proc.pid} on {socket.gethostname()}) was killed" in run.state.message
    assert not [t for t in task_runs if t.state.is_running()]


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_stop_the_build_within_seconds(
    tiny_matrix: Path, tmp_path: Path, signum: int, code: int
) -> None:
    calls = tmp_path / "calls.log"
    env = {**os.environ, "MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_HANG": HANG_CONVERT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(tmp_path / "s")],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        hanging = hanging_steps(calls)
        assert hanging
        start = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - start < 10
        assert proc.returncode == code, stderr
        # What finished is kept, and said (the hanging conversions start first: the longest path).
        assert re.search(rf"stopped by {signal.Signals(signum).name}: \d+ of 22 builds finished and are kept", stderr)
        assert "running the same command again finishes the rest" in stderr and "Traceback" not in stderr
        assert not any(alive(pid) for pid in hanging)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    [(run, task_runs)] = runs_of(proc.pid)
    assert run.state.is_cancelled(), run.state  # not Crashed: it was stopped on purpose
    assert not [t for t in task_runs if t.state.is_running()]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
    return out


def test_sigkill_leaves_nothing_running_and_the_next_run_cleans_up(tiny_matrix: Path, tmp_path: Path) -> None:
    """No shared server here: the build starts its own temporary Prefect server, which must die with it."""
    calls, work = tmp_path / "calls.log", tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env |= {"MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_HANG": HANG_CONVERT, "MLC_FARM_WORK_DIR": str(work)}
    args = [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(tmp_path / "s")]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        hanging_steps(calls)
        started = _children(proc.pid)  # the temporary Prefect server and the toolchain steps
        assert len(started) >= 2
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in started):
            time.sleep(0.2)
        assert not [p for p in started if alive(p)]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert list(work.glob(f"mlc-farm-build-{proc.pid}-*"))  # what the killed builds were working on
    env.pop("MLC_DOUBLE_HANG")
    again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not list(work.glob(f"mlc-farm-build-{proc.pid}-*"))


def test_two_overlapping_runs_build_each_key_once(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "store", tmp_path / "calls.log"
    env = {**os.environ, "MLC_DOUBLE_LOG": str(calls), "MLC_DOUBLE_SLEEP": "1"}
    args = [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(store)]
    runs = [subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]  # fmt: skip
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert steps(calls) == {"convert_weight": 4, "gen_config": 4, "compile": 4}  # each key once, in all
    assert_store_whole(store)
    # Each run says what it built itself: the claims add up to the 22 builds, the rest were waited for.
    done = [" ".join(out.split()).split("done:", 1)[1] for out, _ in outputs]
    claims = sum(int(n) for line in done for n in re.findall(r"(\d+) built(?! by another run)", line))
    waited = sum(int(n) for line in done for n in re.findall(r"(\d+) built by another run", line))
    reused = sum(int(n) for line in done for n in re.findall(r"(\d+) reused", line))
    assert claims == 22 and claims + waited + reused == 44, done


def _forge_leases(matrix: Path, store: Path) -> None:
    """Leases on every convert build, by another host, claiming to hold for a century."""
    plan = json.loads(cli("plan", "--matrix", str(matrix), "--store", str(store), "--format", "json").stdout)
    far = (datetime.now(timezone.utc) + timedelta(days=36500)).isoformat()
    for b in plan["convert_builds"]:
        lease = store / "leases" / f"{b['key']}.json"
        lease.parent.mkdir(parents=True, exist_ok=True)
        lease.write_text(json.dumps({"holder": "far-away-host:1:forged", "expires_at": far}))


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_build_waiting_for_a_lease_stops_within_seconds(
    tiny_matrix: Path, tmp_path: Path, signum: int, code: int
) -> None:
    store = tmp_path / "s"
    _forge_leases(tiny_matrix, store)
    args = [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(tiny_matrix), "--store", str(store)]
    proc = subprocess.Popen(args, env=os.environ, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)  # the flow has started, and its conversions wait for the forged leases
        assert proc.poll() is None
        began = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - began < 10
        assert proc.returncode == code and "Traceback" not in stderr, stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def test_a_lease_that_is_not_renewed_lapses_by_the_waiters_own_clock(tiny_matrix: Path, tmp_path: Path) -> None:
    store, calls = tmp_path / "s", tmp_path / "calls.log"
    _forge_leases(tiny_matrix, store)
    env = {"MLC_DOUBLE_LOG": str(calls), "MLC_FARM_LEASE_SECONDS": "3"}
    done = cli("build", "--matrix", str(tiny_matrix), "--store", str(store), env=env)
    assert done.returncode == 0, done.stdout + done.stderr  # not renewed for 3 s as this build saw it: lapsed
    assert steps(calls)["convert_weight"] == 4


def test_the_cli_makes_the_preflight_once_and_hands_it_to_the_flow(
    tiny_matrix: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matrix is loaded, the store checked and the toolchain probed once per `mlc-farm build`: the flow runs
    on the pre-flight the CLI made (before Prefect started) instead of making its own."""
    from mlc_farm.building import preflight
    from mlc_farm.matrix.load import load_matrix

    loads: list[str] = []
    monkeypatch.setattr(preflight, "load_matrix", lambda path: loads.append(path) or load_matrix(path))
    monkeypatch.setenv("MLC_DOUBLE_FAIL", "convert_weight")  # the run ends at its first build
    done = run_cli("build", "--matrix", str(tiny_matrix), "--store", str(tmp_path / "store"), "--model", "tiny-llama-a")
    assert done.returncode == 1 and "injected failure in convert_weight" in done.stdout, done.stdout + done.stderr
    assert loads == [str(tiny_matrix)]
