"""Pull under faults: the current directory is never replaced, a failed pull leaves its target as it was,
killed pulls leave nothing the next one does not clean, and short, cut, stalled or corrupt S3 answers are
retried within the budget, then fail (exit 3) without hanging; SIGINT/SIGTERM stop a pull within seconds."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlc_farm.errors import CorruptBlobError, StoreUnavailable
from mlc_farm.output_dir import replacing
from mlc_farm.store.s3 import S3Store
from tests.faults import TamperingProxy
from tests.helpers import ROOT, cli, run_cli
from tests.test_heal import flip_a_byte, shard_of
from tests.test_s3_store import random_file

ONE_CELL = """
quantizations: [q0f16]
devices: [{name: cpu, family: cpu, target: llvm, pool: mlc-cpu}]
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""


@pytest.fixture
def built(tiny_models: Path, tmp_path: Path, prefect_api: str) -> str:
    """A local store with one built cell (tiny-llama-a q0f16 cpu)."""
    matrix = tiny_models / f"one-{tmp_path.name}.yaml"
    matrix.write_text(ONE_CELL)
    store = str(tmp_path / "store")
    done = run_cli("build", "--matrix", str(matrix), "--store", store)
    assert done.returncode == 0, done.stdout + done.stderr
    return store


def _listing(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): p.read_text() for p in path.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_the_current_directory_and_its_parents_are_refused_up_front(
    built: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "users" / "here"
    here.mkdir(parents=True)
    (here / "mine.txt").write_text("keep me")
    monkeypatch.chdir(here)
    for target in (".", "./", "..", str(here), str(here.parent), "../here"):
        done = run_cli("pull", "tiny-llama-a", "q0f16", "-o", target, "--force", "--store", built)
        assert done.returncode == 2, (target, done.stdout, done.stderr)
        assert "is the current directory or holds it" in done.stderr and "Traceback" not in done.stderr
    assert _listing(here) == {"mine.txt": "keep me"}
    assert sorted(os.listdir(here.parent)) == ["here"]  # nothing staged beside it either

    assert run_cli("pull", "tiny-llama-a", "q0f16", "-o", "sub", "--store", built).returncode == 0
    (here / "sub" / "extra.txt").write_text("replaced by --force")
    assert run_cli("pull", "tiny-llama-a", "q0f16", "-o", "sub", "--force", "--store", built).returncode == 0
    assert not (here / "sub" / "extra.txt").exists() and (here / "sub" / "mlc-chat-config.json").is_file()
    assert sorted(os.listdir(here)) == ["mine.txt", "sub"]  # no staging or moved-aside directory left


@pytest.mark.slow
def test_a_failed_pull_leaves_its_target_exactly_as_it_was(built: str, tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    flip_a_byte(built, shard_of(built, "q0f16"))
    done = run_cli("pull", "tiny-llama-a", "q0f16", "-o", str(target), "--force", "--store", built)
    assert done.returncode == 1 and "is corrupt" in done.stderr and "Traceback" not in done.stderr
    assert _listing(target) == {"mine.txt": "keep me"}
    assert not list(tmp_path.glob(".out.*"))  # no staging or moved-aside directory beside it


def test_leftovers_of_killed_pulls_are_cleaned_and_a_half_done_swap_is_undone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    dead = tmp_path / ".out.writing-dead1234"
    dead.mkdir()
    (dead / "params_shard_0.bin").write_bytes(b"x" * 1000)
    moved = tmp_path / ".out.replaced-0badc0de"  # killed between the swap's two renames: the user's old directory
    moved.mkdir()
    (moved / "mine.txt").write_text("old")
    live = tmp_path / ".out.writing-live5678"  # another pull, still running: left alone
    live.mkdir()
    held = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        with replacing(out, "-o", replace=True) as staging:
            assert _listing(out) == {"mine.txt": "old"}  # put back before anything else
            (staging / "new.txt").write_text("new")
        assert _listing(out) == {"new.txt": "new"}
        assert not dead.exists() and not moved.exists() and live.exists()
    finally:
        os.close(held)


@pytest.fixture
def tampered(s3_store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A 1 MB blob in S3, and a store that reads it through a TamperingProxy in 64 KB ranges (16 ranges, more
    than the window of 8), with a retry budget of 4 s."""
    monkeypatch.setenv("MLC_FARM_RETRY_SECONDS", "4")
    blob = tmp_path / "blob"
    sha = random_file(blob, 1 << 20, seed=7)
    S3Store(s3_store_url).put_blob(blob, sha)
    proxy = TamperingProxy(os.environ["AWS_ENDPOINT_URL"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    store = S3Store(s3_store_url)
    store.range_size = 64 * 1024
    yield store, proxy, sha
    proxy.close()


def _window_is_whole(store: S3Store) -> bool:
    return store._window._value == store.concurrency  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["short", "cut", "stall"])
def test_short_cut_or_stalled_ranges_are_retried_then_fail_within_the_budget(
    tampered, tmp_path: Path, mode: str
) -> None:
    store, proxy, sha = tampered
    dest = tmp_path / "got" / "blob"
    proxy.spoil(mode, times=1)  # a bad answer: retried, and the download is whole
    store.get_blob(sha, dest)
    assert proxy.spoiled == 1 and dest.stat().st_size == 1 << 20 and _window_is_whole(store)
    dest.unlink()

    proxy.spoil(mode, times=-1)  # every answer bad: the budget (4 s) holds, then a clear transient error
    began = time.monotonic()
    with pytest.raises(StoreUnavailable, match="try again later"):
        store.get_blob(sha, dest)
    assert time.monotonic() - began < 4 + 2  # the budget, plus at most the last attempt's quarter of it
    assert not dest.exists() and not list(dest.parent.iterdir())
    assert _window_is_whole(store)  # nothing held: the next download is not starved
    proxy.spoil("", times=0)
    store.get_blob(sha, dest)
    assert dest.stat().st_size == 1 << 20


def test_a_corrupt_range_fails_the_download_and_leaves_nothing(tampered, tmp_path: Path) -> None:
    store, proxy, sha = tampered
    proxy.spoil("corrupt", times=1, target="Range: bytes=131072-")
    with pytest.raises(CorruptBlobError, match="is corrupt"):
        store.get_blob(sha, tmp_path / "got" / "blob")
    assert not list((tmp_path / "got").iterdir()) and _window_is_whole(store)


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, None)])
def test_a_stalled_pull_stops_within_seconds_of_a_signal_and_a_killed_ones_leftovers_go(
    tiny_models: Path, tmp_path: Path, s3_store_url: str, prefect_api: str, signum: int, code: int | None
) -> None:
    matrix = tiny_models / f"one-{tmp_path.name}.yaml"
    matrix.write_text(ONE_CELL)
    assert run_cli("build", "--matrix", str(matrix), "--store", s3_store_url).returncode == 0
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    proxy = TamperingProxy(os.environ["AWS_ENDPOINT_URL"])
    proxy.spoil("stall", times=-1, target="/blobs/sha256/")  # every blob: half sent, then silence
    args = [sys.executable, "-m", "mlc_farm.cli", "pull", "tiny-llama-a", "q0f16", "-o", str(target), "--force",
            "--store", s3_store_url]  # fmt: skip
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint}
    try:
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while proxy.spoiled < 4 and time.monotonic() < deadline:
            time.sleep(0.1)  # the pull read the catalog and records, and its 4 downloads are stalled
        assert list(tmp_path.glob(".out.writing-*"))
        began = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=10)
        assert time.monotonic() - began < 10
        if code is not None:
            assert proc.returncode == code and "stopped by" in stderr and "Traceback" not in stderr
            assert not list(tmp_path.glob(".out.*"))  # it cleaned up after itself
        else:
            assert list(tmp_path.glob(".out.writing-*"))  # a SIGKILL leaves its staging behind, which gc removes
            swept = cli("gc", "--store", s3_store_url, env=env)
            assert swept.returncode == 0 and "removed 0 unreferenced blobs" in " ".join(swept.stdout.split())
            assert "and 1 staging directories of killed pulls" in " ".join(swept.stdout.split())
            assert not list(tmp_path.glob(".out.*"))
        assert _listing(target) == {"mine.txt": "keep me"}
        proxy.spoil("", times=0)
        again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stderr
        assert not list(tmp_path.glob(".out.*"))  # and nothing is left beside the target
        assert (target / "mlc-chat-config.json").is_file() and not (target / "mine.txt").exists()
    finally:
        proxy.close()
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            proc.kill()


def test_a_full_disk_mid_download_fails_it_without_a_hang(
    tampered, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    store, _proxy, sha = tampered
    real, writes = os.pwrite, [0]

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        writes[0] += 1
        if writes[0] == 2:  # the first range after the one at byte 0: nothing after it can be hashed in order
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr("mlc_farm.store.s3.os.pwrite", pwrite)
    with pytest.raises(OSError, match="No space left"):
        store.get_blob(sha, tmp_path / "got" / "blob")
    assert not list((tmp_path / "got").iterdir()) and _window_is_whole(store)


@pytest.mark.slow
def test_killed_installs_leave_nothing_after_the_next_install_and_after_gc(
    tiny_models: Path, tmp_path: Path, s3_store_url: str, prefect_api: str
) -> None:
    matrix = tiny_models / f"one-{tmp_path.name}.yaml"
    matrix.write_text(ONE_CELL)
    assert run_cli("build", "--matrix", str(matrix), "--store", s3_store_url).returncode == 0
    home, temp = tmp_path / "mlc", tmp_path / "tmp"
    temp.mkdir()
    proxy = TamperingProxy(os.environ["AWS_ENDPOINT_URL"])
    args = [sys.executable, "-m", "mlc_farm.cli", "install", "tiny-llama-a", "q0f16", "--device", "cpu",
            "--mlc-home", str(home), "--store", s3_store_url]  # fmt: skip
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint, "TMPDIR": str(temp)}

    from mlc_farm.records.reads import get_entry
    from mlc_farm.store import open_store

    library = get_entry(open_store(s3_store_url), "tiny-llama-a", "q0f16").libs["cpu"].file.sha256

    def killed_installs(n: int) -> None:
        """`n` installs SIGKILLed while their library's download hangs: each leaves its scratch directory."""
        proxy.spoil("stall", times=-1, target=f"/blobs/sha256/{library}")
        for _ in range(n):
            stalled = proxy.spoiled
            proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            while proxy.spoiled == stalled and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.kill()
            proc.wait()
        proxy.spoil("", times=0)

    def leftovers() -> list[str]:
        lib_dir = home / "model_lib"
        hidden = [p.name for p in lib_dir.iterdir() if p.name.startswith(".")] if lib_dir.is_dir() else []
        return [p.name for p in temp.iterdir() if "mlc-farm-install" in p.name] + hidden

    try:
        killed_installs(5)
        assert len(leftovers()) == 1  # the last one's: each install first removed those of the killed ones before
        swept = cli("gc", "--store", s3_store_url, env=env)
        assert swept.returncode == 0 and leftovers() == []
        killed_installs(5)
        # A library copy killed half-way, as installs before the scratch directory left it (its process is gone).
        (home / "model_lib").mkdir(parents=True)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        (home / "model_lib" / f".abc.so.{int(dead.stdout)}.part").write_bytes(b"half a library")
        assert len(leftovers()) == 2
        done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "already installed" not in done.stdout, done.stdout + done.stderr
        assert leftovers() == []
        again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "already installed" in again.stdout and leftovers() == []
    finally:
        proxy.close()
