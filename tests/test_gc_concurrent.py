"""gc beside running builds: `gc --min-age-hours 0` in a loop while a build runs removes nothing the build
uploads, re-uses or is writing (blobs, multipart uploads, temporary files), on S3 (SeaweedFS) and locally."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_cli


@pytest.fixture(params=["local", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return request.getfixturevalue("s3_store_url") if request.param == "s3" else str(tmp_path / "store")


def _build(matrix: Path, store: str, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(matrix), "--store", store, *extra]
    env = {**os.environ, "MLC_DOUBLE_SLEEP": "1"}  # each toolchain step takes a second: gc runs in between
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_gc_in_a_loop_during_a_build_removes_nothing_the_build_needs(tiny_matrix: Path, store_url: str) -> None:
    # A first build, then a forced one: the second re-uses every blob (the case where a re-used blob kept its
    # old age), and uploads new logs; gc runs all the while with no age limit.
    assert run_cli("build", "--matrix", str(tiny_matrix), "--store", store_url).returncode == 0
    stop, runs = threading.Event(), [0]

    def collect() -> None:
        while not stop.is_set():
            done = run_cli("gc", "--min-age-hours", "0", "--store", store_url)
            assert done.returncode in (0, 1), done.stderr  # 1: another gc (none here) or a store hiccup
            runs[0] += 1
            time.sleep(0.3)

    gc = threading.Thread(target=collect)
    gc.start()
    try:
        proc = _build(tiny_matrix, store_url, "--force")
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        stop.set()
        gc.join(60)
    assert proc.returncode == 0, stdout + stderr
    assert runs[0] >= 3, "gc must have run during the build"
    verify = run_cli("verify", "--deep", "--store", store_url)
    assert verify.returncode == 0, verify.stderr  # every record and entry points at whole blobs
    listing = run_cli("ls", "--store", store_url).stdout
    for model in ("tiny-llama-a", "tiny-llama-b"):
        for quant in ("q4f16_1", "q0f16"):
            assert f"{model} {quant} cpu:" in listing and f"{model} {quant} vulkan:" in listing
    assert run_cli("gc", "--min-age-hours", "0", "--store", store_url).returncode == 0  # the old builds' logs
    assert run_cli("verify", "--deep", "--store", store_url).returncode == 0


def test_gc_keeps_the_temporary_files_of_a_live_process(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (store / "tmp").mkdir(parents=True)
    mine = store / "tmp" / f"{socket.gethostname()}-{os.getpid()}-0123abcd"  # this live process, writing
    gone = store / "tmp" / f"{socket.gethostname()}-999999999-0123abcd"  # a process that is gone
    other = store / "tmp" / "another-host-4242-0123abcd"  # another machine sharing the store, writing now
    for path in (mine, gone, other):
        path.write_text("half")
    done = run_cli("gc", "--min-age-hours", "0", "--store", str(store))
    assert done.returncode == 0, done.stderr
    assert mine.exists() and other.exists() and not gone.exists()
    assert not list((store / "leases").glob("*"))  # gc's lease is gone with it


HOLDER = """
import sys, time
from pathlib import Path
from mlc_farm.store import lease, open_store

store, blob, sha = open_store(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
with lease.held(store, "f" * 64, 60, lambda: None) as holding:
    holding.announce([sha])  # a build between uploading its blobs and writing its record
    store.put_blob(blob, sha)
    print("ready", flush=True)
    time.sleep(600)
"""


def fast_clock(days: int) -> dict[str, str]:
    """The environment of a process whose clock is `days` fast (libfaketime; monotonic time left true)."""
    import libfaketime

    return {**libfaketime.get_reload_information()[1], "FAKETIME": f"+{days}d"}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_gc_on_a_machine_whose_clock_is_two_days_fast_removes_nothing_a_live_build_or_the_catalog_needs(
    tiny_models: Path, store_url: str, tmp_path: Path
) -> None:
    import hashlib

    from tests.helpers import UNPUBLISHED_CELL, cli

    matrix = tiny_models / f"one-{tmp_path.name}.yaml"
    matrix.write_text(UNPUBLISHED_CELL)
    assert run_cli("build", "--matrix", str(matrix), "--store", store_url).returncode == 0
    blob = tmp_path / "blob"
    blob.write_bytes(os.urandom(1000))
    sha = hashlib.sha256(blob.read_bytes()).hexdigest()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, store_url, str(blob), sha], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert holder.stdout and holder.stdout.readline().strip() == "ready", holder.stderr and holder.stderr.read()
        for args in (["--min-age-hours", "0"], []):
            began = time.monotonic()
            swept = cli("gc", *args, "--store", store_url, env=fast_clock(2))
            said = " ".join((swept.stdout + swept.stderr).split())
            if store_url.startswith("s3://"):  # S3 refuses a request signed two days off: said as such, exit 3
                assert swept.returncode == 3 and "the local clock is +1728" in said and "off the store's" in said
                assert time.monotonic() - began < 60  # at once: waiting out the retry budget cures no clock
                assert "AWS_ACCESS_KEY_ID" not in said  # not blamed on the credentials
            else:
                assert swept.returncode == 0 and "removed 0 unreferenced blobs" in said, said
        holder.kill()
        holder.wait()
        verify = run_cli("verify", "--deep", "--store", store_url)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        from mlc_farm.store import open_store

        assert open_store(store_url).has_blob(sha)  # the live build's blob, not yet in any record
    finally:
        holder.kill()
