"""Upload and download of an artifact set (~2 GB: a few 500 MB shards and many small files) to a local
SeaweedFS, by the mlc-farm S3 store and by two baselines measured in the same run: a plain loop of boto3
upload_file/download_file, and the AWS CLI (`aws s3 cp --recursive`). Prints each one's median of --rounds runs
(MB/s, peak memory, CPU) and the ratio to each baseline (run by hand).

    .venv/bin/python benchmarks/transfer.py [--shards 4 --shard-mb 500 --small 300 --rounds 3]

The AWS CLI is taken from $AWS_CLI, else `aws` on PATH (pip install 'mlc-farm[bench]' provides it).
mlc-farm's upload includes hashing every file first (its content address, the digest a build signs), then
sends each file read once, checking as it reads that the bytes are the ones hashed; its download checks every
sha256 as the ranges land. Every round uploads to new keys: the default set takes ~20 GB of temporary disk.
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
        entries = json.loads((src / "manifest.json").read_text())  # src: the upload's folder
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


Run = tuple[float, float, float]  # seconds, peak RSS in MB, CPU seconds


def measure(cmd: list[str], env: dict[str, str]) -> Run:
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
# waits that long). A try longer than most of this beyond the fastest run of the same transfer stalled.
CLI_READ_TIMEOUT = 10
CLI_TRIES = 3


def measure_cli(
    cmd: list[str], env: dict[str, str], fastest: float, clean: Callable[[], None] = lambda: None
) -> tuple[Run, int]:
    """The AWS CLI's run, and how many tries stalled. On SeaweedFS the CLI sometimes waits out its read timeout
    on a small PUT answered with no length (then retries): such a try measures the timeout, not a transfer,
    and would print a bogus speed-up. A try that took most of a read timeout longer than the fastest run so far
    of the same transfer is discarded and run again, at most CLI_TRIES times; the last is kept."""
    for stalled in range(CLI_TRIES):
        clean()
        run = measure(cmd, env)
        if run[0] < fastest + 0.8 * CLI_READ_TIMEOUT:
            return run, stalled
        print(f"(the aws cli took {run[0]:.0f} s: it waited out its read timeout; tried again)")
    return run, CLI_TRIES


def orders(clients: list[str], rounds: int) -> list[list[str]]:
    """The clients' order in each round, rotated: each takes each place in turn, so that none always runs
    right after the same other one."""
    return [clients[r % len(clients) :] + clients[: r % len(clients)] for r in range(rounds)]


def median(runs: list[Run]) -> Run:
    return sorted(runs)[(len(runs) - 1) // 2]


class Bench:
    """One direction's runs of every client, round after round, and the AWS CLI's stalled tries."""

    def __init__(
        self, way: str, commands: dict[str, Callable[[int], list[str]]], env: dict[str, str], clean: Callable[[], None]
    ):
        self.way, self.commands, self.env, self.clean = way, commands, env, clean
        self.runs: dict[str, list[Run]] = {name: [] for name in commands}
        self.stalls = 0

    def run(self, rounds: int) -> None:
        for r, order in enumerate(orders(list(self.commands), rounds)):
            for name in order:
                self.clean()
                if name == "aws cli":
                    got, stalled = measure_cli(self.commands[name](r), self.env, self.fastest(), self.clean)
                    self.stalls += stalled
                else:
                    got = measure(self.commands[name](r), self.env)
                self.runs[name].append(got)
        self.clean()

    def fastest(self) -> float:
        return min((run[0] for runs in self.runs.values() for run in runs), default=float("inf"))

    def report(self, mb: float) -> None:
        for name, runs in self.runs.items():
            seconds, peak, cpu = median(runs)
            spread = f"{min(r[0] for r in runs):.1f}-{max(r[0] for r in runs):.1f}"
            print(
                f"{name + ' ' + self.way:22s} {seconds:8.1f} {spread:>10s} {mb / seconds:8.0f} {peak:8.0f} {cpu:8.1f}"
            )

    def ratio(self, baseline: str) -> str:
        farm, base = self.runs["mlc-farm"], self.runs[baseline]
        said = f"{median(base)[0] / median(farm)[0]:.2f}x"
        if len(farm) > 1:
            said += " (by round: " + ", ".join(f"{b[0] / f[0]:.2f}x" for f, b in zip(farm, base, strict=True)) + ")"
        tries = CLI_TRIES * len(base)
        if baseline == "aws cli" and self.stalls == tries:
            return f"not measured (the aws cli hit its {CLI_READ_TIMEOUT} s read timeout in every try)"
        if baseline == "aws cli" and self.stalls:
            said += f" (after {self.stalls} of its tries stalled on its read timeout and were discarded)"
        return said


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--small", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
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

        def me(mode: str, src: Path, dst: Path, url: str) -> list[str]:
            dst.mkdir(parents=True, exist_ok=True)
            return [sys.executable, __file__, "--worker", mode, str(src), str(dst), url]

        cli = [aws, "s3", "cp", "--recursive", "--quiet", "--cli-read-timeout", str(CLI_READ_TIMEOUT)]
        down = work / "down"
        up = Bench("upload", {
            "mlc-farm": lambda r: me("farm-up", src, work / f"farm-{r}", f"s3://{bucket}/farm-{r}"),
            "boto3 loop": lambda r: me("boto3-up", src, work / "x", f"s3://{bucket}/boto3-{r}"),
            "aws cli": lambda r: [*cli, str(src), f"s3://{bucket}/cli-{r}/"],
        }, env, lambda: None)  # fmt: skip
        up.run(args.rounds)
        downs = Bench("download", {  # each round downloads what the first round uploaded
            "mlc-farm": lambda r: me("farm-down", work / "farm-0", down, f"s3://{bucket}/farm-0"),
            "boto3 loop": lambda r: me("boto3-down", src, down, f"s3://{bucket}/boto3-0"),
            "aws cli": lambda r: [*cli, f"s3://{bucket}/cli-0/", str(down)],
        }, env, lambda: shutil.rmtree(down, True))  # fmt: skip
        # Not counted: the first download after the uploads was the slowest of its client's, whichever client it
        # was (the farm's 13.2 s against 5.3-6.2 s after it, the CLI's 19.0 s against 9.0-12.5 s).
        measure(downs.commands["boto3 loop"](0), env)
        downs.run(args.rounds)

        head = f"median of {args.rounds} rounds"
        print(f"{head:22s} {'seconds':>8s} {'range':>10s} {'MB/s':>8s} {'peak MB':>8s} {'CPU s':>8s}")
        up.report(mb)
        downs.report(mb)
        farm_up = median(up.runs["mlc-farm"])
        hashed = float((work / f"farm-{up.runs['mlc-farm'].index(farm_up)}" / "hash-seconds").read_text())
        sending = farm_up[0] - hashed
        print(
            f"\nmlc-farm upload: {hashed:.1f} s hashing the files (the digests a build signs), {sending:.1f} s "
            f"sending them (each read once, hashed again as it goes): sending alone "
            f"{median(up.runs['aws cli'])[0] / sending:.2f}x the aws cli"
        )
        for bench in (up, downs):
            print(
                f"\n{bench.way}: mlc-farm vs boto3 loop {bench.ratio('boto3 loop')}, "
                f"vs aws cli {bench.ratio('aws cli')} (higher is faster)"
            )
    finally:
        if "server" in locals():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
