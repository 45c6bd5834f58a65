"""Upload and download of an artifact set (~2 GB: a few 500 MB shards and many small files) to a local
SeaweedFS, by the mlc-farm S3 store and by two baselines measured in the same run: a plain loop of boto3
upload_file/download_file, and the AWS CLI (`aws s3 cp --recursive`). Prints MB/s, the ratio to each
baseline, and each process's peak memory (run by hand).

    .venv/bin/python benchmarks/transfer.py [--shards 4 --shard-mb 500 --small 300]

The AWS CLI is taken from $AWS_CLI, else `aws` on PATH (pip install 'mlc-farm[bench]' provides it).
mlc-farm's upload includes hashing every file first (its content address, the digest a build signs), then
sends each file read once, checking as it reads that the bytes are the ones hashed; its download checks every
sha256 as the ranges land.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_artifacts(root: Path, shards: int, shard_mb: int, small: int) -> int:
    root.mkdir(parents=True)
    block = os.urandom(8 << 20)
    for i in range(shards):
        with (root / f"params_shard_{i}.bin").open("wb") as f:
            for j in range(shard_mb // 8):
                f.write(block[j % 7 :] + block[: j % 7])  # distinct blocks, cheap to make
    for i in range(small):
        (root / f"small_{i:04d}.json").write_bytes(os.urandom(1024 + (i * 7919) % 200_000))
    return sum(p.stat().st_size for p in root.iterdir())


def worker(mode: str, src: Path, dst: Path, url: str) -> None:
    """One measured variant, in its own process so that its peak memory is its own."""
    import boto3

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    files = sorted(p for p in src.iterdir())
    if mode == "farm-up":  # as a build does: hash (the digests it signs), then send, verifying as it reads
        from mlc_farm.building.build import hash_files, store_files
        from mlc_farm.store import open_store

        paths = {p.name: p for p in files}
        start = time.perf_counter()
        hashes = hash_files(paths)
        (dst / "hash-seconds").write_text(str(time.perf_counter() - start))
        entries = store_files(open_store(url), paths, hashes)
        (dst / "manifest.json").write_text(json.dumps([e.model_dump() for e in entries]))
    elif mode == "farm-down":
        from concurrent.futures import ThreadPoolExecutor

        from mlc_farm.store import open_store

        store = open_store(url)
        entries = json.loads((src.parent / "farm-manifest" / "manifest.json").read_text())
        with ThreadPoolExecutor(max_workers=4) as pool:  # as `mlc-farm pull` does
            list(pool.map(lambda e: store.get_blob(e["sha256"], dst / e["path"]), entries))
    elif mode == "boto3-up":
        s3 = boto3.session.Session().client("s3")
        for p in files:
            s3.upload_file(str(p), bucket, f"{prefix}/{p.name}")
    elif mode == "boto3-down":
        s3 = boto3.session.Session().client("s3")
        for p in files:
            s3.download_file(bucket, f"{prefix}/{p.name}", str(dst / p.name))
    else:
        raise SystemExit(f"unknown mode {mode}")


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(seconds, peak RSS in MB, CPU seconds) of one child process: on a machine whose cores the server shares,
    the client's CPU is what it takes from the server."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[:3]} failed")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


# The AWS CLI's read timeout: 10 s, not its default 60 (a local server answers in milliseconds, so only a stall
# waits that long). A try longer than most of this beyond the boto3 loop's time stalled.
CLI_READ_TIMEOUT = 10
CLI_TRIES = 3


def measure_cli(
    cmd: list[str], env: dict[str, str], boto3_seconds: float, clean: Callable[[], None] = lambda: None
) -> tuple[tuple[float, float, float], int]:
    """The AWS CLI's run, and how many tries stalled. On SeaweedFS the CLI sometimes waits out its read timeout
    on a small PUT answered with no length (then retries): such a try measures the timeout, not a transfer,
    and would print a bogus speed-up. A try that took most of a read timeout longer than the boto3 loop is discarded
    and run again, at most CLI_TRIES times; the last is kept."""
    for stalled in range(CLI_TRIES):
        clean()
        run = measure(cmd, env)
        if run[0] < boto3_seconds + 0.8 * CLI_READ_TIMEOUT:
            return run, stalled
        print(f"(the aws cli took {run[0]:.0f} s: it waited out its read timeout; tried again)")
    return run, CLI_TRIES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--worker", nargs=4, metavar=("MODE", "SRC", "DST", "URL"))
    args = parser.parse_args()
    if args.worker:
        mode, src, dst, url = args.worker
        worker(mode, Path(src), Path(dst), url)
        return

    import boto3

    from tests.seaweed import SeaweedS3

    aws = os.environ.get("AWS_CLI") or shutil.which("aws")
    if not aws:
        raise SystemExit("no AWS CLI: pip install 'mlc-farm[bench]' or set AWS_CLI")
    work = Path(tempfile.mkdtemp(prefix="mlc-farm-transfer-"))
    try:
        server = SeaweedS3.start(work / "seaweed")
        env = {**os.environ, **server.env(), "AWS_CONFIG_FILE": "/dev/null"}
        os.environ.update(server.env())
        bucket = f"bench{uuid.uuid4().hex[:10]}"
        boto3.client("s3").create_bucket(Bucket=bucket)
        src = work / "artifacts"
        total = make_artifacts(src, args.shards, args.shard_mb, args.small)
        mb = total / 1e6
        print(f"artifact set: {len(list(src.iterdir()))} files, {mb:.0f} MB; server {server.endpoint}\n")

        def me(mode: str, dst: Path, url: str) -> list[str]:
            dst.mkdir(parents=True, exist_ok=True)
            return [sys.executable, __file__, "--worker", mode, str(src), str(dst), url]

        runs: dict[str, tuple[float, float, float]] = {}
        stalls: dict[str, int] = {}
        cli = [aws, "s3", "cp", "--recursive", "--quiet", "--cli-read-timeout", str(CLI_READ_TIMEOUT)]
        runs["mlc-farm upload"] = measure(me("farm-up", work / "farm-manifest", f"s3://{bucket}/farm"), env)
        runs["boto3 loop upload"] = measure(me("boto3-up", work / "x", f"s3://{bucket}/boto3"), env)
        runs["aws cli upload"], stalls["upload"] = measure_cli(
            [*cli, str(src), f"s3://{bucket}/cli/"], env, runs["boto3 loop upload"][0]
        )
        cli_down = [*cli, f"s3://{bucket}/cli/", str(work / "down")]
        downloads: dict[str, Callable[[], tuple[tuple[float, float, float], int]]] = {
            "mlc-farm download": lambda: (measure(me("farm-down", work / "down", f"s3://{bucket}/farm"), env), 0),
            "boto3 loop download": lambda: (measure(me("boto3-down", work / "down", f"s3://{bucket}/boto3"), env), 0),
            "aws cli download": lambda: measure_cli(
                cli_down, env, runs["boto3 loop download"][0], lambda: shutil.rmtree(work / "down", True)
            ),
        }
        # Each download twice, in one order then the other, and the faster of its two runs kept: here the first
        # download after the uploads took up to 1.7x as long as the same download run again, whichever it was.
        stalls["download"] = 0
        for order in (list(downloads), list(reversed(downloads))):
            for name in order:
                run, stalled = downloads[name]()
                runs[name], stalls["download"] = min(run, runs.get(name, run)), stalls["download"] + stalled
                shutil.rmtree(work / "down", True)
        tries = {"upload": CLI_TRIES, "download": 2 * CLI_TRIES}

        print(f"{'':22s} {'seconds':>8s} {'MB/s':>8s} {'peak MB':>8s} {'CPU s':>8s}")
        for name, (seconds, peak, cpu) in runs.items():
            print(f"{name:22s} {seconds:8.1f} {mb / seconds:8.0f} {peak:8.0f} {cpu:8.1f}")
        hashed = float((work / "farm-manifest" / "hash-seconds").read_text())
        sending = runs["mlc-farm upload"][0] - hashed
        print(
            f"\nmlc-farm upload: {hashed:.1f} s hashing the files (the digests a build signs), {sending:.1f} s "
            f"sending them (each read once, hashed again as it goes): sending alone "
            f"{runs['aws cli upload'][0] / sending:.2f}x the aws cli"
        )
        for way in ("upload", "download"):
            farm = runs[f"mlc-farm {way}"][0]
            cli_ratio = f"{runs[f'aws cli {way}'][0] / farm:.2f}x"
            if stalls[way] == tries[way]:
                cli_ratio = f"not measured (the aws cli hit its {CLI_READ_TIMEOUT} s read timeout in every try)"
            elif stalls[way]:
                cli_ratio += f" (after {stalls[way]} of its tries stalled on its read timeout and were discarded)"
            print(
                f"\n{way}: mlc-farm vs boto3 loop {runs[f'boto3 loop {way}'][0] / farm:.2f}x, "
                f"vs aws cli {cli_ratio} (higher is faster)"
            )
    finally:
        if "server" in locals():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
