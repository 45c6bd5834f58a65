"""What only the S3 store has, against a real SeaweedFS server (the contract of every store is
test_store_contract.py): verified multipart transfers, resumable uploads, conditional writes, clear permanent
errors, retried transient ones."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from mlc_farm.building.build import store_files
from mlc_farm.catalog.gc import collect
from mlc_farm.errors import CorruptBlobError, StoreError, StoreUnavailable, WriteConflict
from mlc_farm.retry import is_transient
from mlc_farm.store import open_store
from mlc_farm.store.layout import blob_path
from mlc_farm.store.s3 import S3Store
from tests.faults import FaultyProxy
from tests.helpers import ROOT, cli, run_cli, s3_client, toolchain_calls, unhashed
from tests.seaweed import SeaweedS3
from tests.test_build import steps


def random_file(path: Path, size: int, seed: int) -> str:
    data = hashlib.sha256(str(seed).encode()).digest() * (size // 32 + 1)
    path.write_bytes(data[:size])
    return hashlib.sha256(data[:size]).hexdigest()


def bucket_of(url: str) -> str:
    return url.removeprefix("s3://").split("/")[0]


def test_multipart_round_trip_with_verified_checksums(
    s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_FARM_S3_CHUNK_MB", "5")
    monkeypatch.setenv("MLC_FARM_S3_RANGE_MB", "1")
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    big = tmp_path / "params_shard_0.bin"
    digest = random_file(big, 23 * 1024 * 1024 + 7, seed=1)
    sent_bytes: list[int] = []
    signed: list[bytes] = []  # what each request says of its body's hash (over http, as to a local store)
    store.client.meta.events.register("before-send.s3", lambda request, **_: signed.append(
        request.headers["X-Amz-Content-SHA256"]))  # fmt: skip
    assert store.put_blob(big, digest, sent_bytes.append) is True
    assert set(signed) == {b"UNSIGNED-PAYLOAD"}  # no part hashed a third time for its signature
    assert store.requests["UploadPart"] == 5 and store.requests["CompleteMultipartUpload"] == 1
    assert sum(sent_bytes) == big.stat().st_size and len(sent_bytes) > 1  # progress as the parts go
    head = s3_client().head_object(Bucket=store.bucket, Key=f"farm/{blob_path(digest)}", ChecksumMode="ENABLED")
    assert head["ContentLength"] == big.stat().st_size
    assert head["ChecksumCRC32"].endswith("-5")  # the server holds (and checked) a CRC32 per part

    before = dict(store.requests)
    assert store.put_blob(big, digest) is False  # already there: one HEAD, nothing sent
    sent = {k: v - before.get(k, 0) for k, v in store.requests.items() if v != before.get(k, 0)}
    assert sent == {"HeadObject": 1}

    out = tmp_path / "out" / "shard.bin"
    landed: list[int] = []
    store.get_blob(digest, out, landed.append)
    assert out.read_bytes() == big.read_bytes()
    assert sum(landed) == big.stat().st_size and len(landed) > 1  # progress as the ranges land
    # The 24 ranges were read into reused buffers, each given back: at most the window's and the first range's.
    made = len(store._ranges._free)
    assert 1 < made <= store.concurrency + 1
    store.get_blob(digest, tmp_path / "again.bin")
    assert len(store._ranges._free) == made and (tmp_path / "again.bin").read_bytes() == big.read_bytes()


@pytest.mark.parametrize("size", [1000, 12 * 1024 * 1024 + 3])
def test_a_file_changed_since_it_was_hashed_is_not_stored(
    s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """The upload hashes the bytes it sends (one read): bytes that are not what was hashed and signed never
    become the blob of that digest, and a refused multipart upload is aborted, not left for gc."""
    monkeypatch.setenv("MLC_FARM_S3_CHUNK_MB", "5")
    store = open_store(s3_store_url)
    f = tmp_path / "params_shard_0.bin"
    signed = random_file(f, size, seed=21)
    random_file(f, size, seed=22)  # rewritten after it was hashed
    with pytest.raises(CorruptBlobError, match=f"{f.name} changed since it was hashed"):
        store.put_blob(f, signed)
    assert not store.has_blob(signed)
    assert not s3_client().list_multipart_uploads(Bucket=bucket_of(s3_store_url)).get("Uploads")


def test_blobs_an_older_farm_uploaded_with_sha256_checksums_are_not_sent_again(
    s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from boto3.s3.transfer import TransferConfig

    monkeypatch.setenv("MLC_FARM_S3_CHUNK_MB", "5")
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    old = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
    for i, size in enumerate([1000, 11 * 1024 * 1024]):
        f = tmp_path / f"f{i}"
        digest = random_file(f, size, seed=30 + i)
        key = f"farm/{blob_path(digest)}"
        s3_client().upload_file(str(f), store.bucket, key, ExtraArgs={"ChecksumAlgorithm": "SHA256"}, Config=old)
        before = store.requests["PutObject"] + store.requests["UploadPart"]
        assert store.put_blob(f, digest) is False
        assert store.requests["PutObject"] + store.requests["UploadPart"] == before


def test_killed_upload_is_finished_by_the_next_run_sending_only_what_is_missing(
    s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_FARM_S3_CHUNK_MB", "5")
    files = {}
    for i in range(6):
        size = 12 * 1024 * 1024 if i == 3 else 200_000
        p = tmp_path / f"f{i}.bin"
        random_file(p, size, seed=10 + i)
        files[p.name] = p
    # A process that uploads one part at a time, slowly, killed while the big file is half-way.
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from mlc_farm.digests import file_sha256
        from mlc_farm.store import open_store
        store = open_store({s3_store_url!r})
        store.client.meta.events.register("before-call.s3.UploadPart", lambda **kw: time.sleep(0.7))
        for i in range(6):
            p = Path({str(tmp_path)!r}) / f"f{{i}}.bin"
            store.put_blob(p, file_sha256(p))
            print("done", i, flush=True)
    """)
    env = {**os.environ, "MLC_FARM_S3_CONCURRENCY": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    s3 = s3_client()
    bucket = bucket_of(s3_store_url)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "done 2":
            break
    deadline = time.monotonic() + 60
    while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads") and time.monotonic() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    store = open_store(s3_store_url)
    # Readers see only whole blobs: the big one is not there, its upload is pending.
    assert not store.has_blob(hashlib.sha256(files["f3.bin"].read_bytes()).hexdigest())
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1
    assert len(list(store.names("blobs/"))) == 3

    entries = store_files(store, files)
    assert len(entries) == 6 and all(store.has_blob(e.sha256) for e in entries)
    assert store.requests["PutObject"] == 2  # f4, f5
    assert store.requests["CreateMultipartUpload"] == 1  # f3, again
    assert store.requests["UploadPart"] == 3  # 12 MB in 5 MB parts
    assert store.abort_stale_uploads(timedelta(0)) == [f"farm/{blob_path(entries[3].sha256)}"]
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_conditional_write_refuses_a_stale_update(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    store.write_json("catalog/x.json", {"v": 1})
    _, etag = store._get_json("catalog/x.json") or ({}, "")
    store.write_json("catalog/x.json", {"v": 2})
    with pytest.raises(WriteConflict):
        store.write_json("catalog/x.json", {"v": 3}, IfMatch=etag)
    assert store.read_json("catalog/x.json") == {"v": 2}


def test_wrong_secret_and_missing_bucket_give_clear_errors(
    seaweed: SeaweedS3, s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-9f8e7d")
    with pytest.raises(StoreError) as info:
        open_store(s3_store_url).has_blob("0" * 64)
    message = str(info.value)
    assert f"s3://{bucket_of(s3_store_url)}" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret-9f8e7d" not in message
    done = cli("ls", "--store", s3_store_url)
    assert done.returncode == 1 and "access denied" in done.stderr
    assert "not-the-secret-9f8e7d" not in done.stdout + done.stderr

    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(StoreError, match="no AWS credentials found for s3://"):
        open_store(s3_store_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)

    with pytest.raises(StoreError, match="bucket 'no-such-bucket-x' does not exist"):
        open_store("s3://no-such-bucket-x/farm").has_blob("0" * 64)


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_transient_errors_are_retried(
    seaweed: SeaweedS3, s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    proxy = FaultyProxy(seaweed.endpoint, failures=3, mode=mode)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        store = open_store(s3_store_url)
        f = tmp_path / "config.json"
        digest = random_file(f, 1000, seed=3)
        assert store.put_blob(f, digest) is True
        assert proxy.seen > 3
        assert store.has_blob(digest)
    finally:
        proxy.close()


def test_one_retry_layer_per_call_then_a_clear_transient_error(
    seaweed: SeaweedS3, s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage longer than MLC_FARM_RETRY_SECONDS: each call is attempted by one layer for that budget (a few
    requests, not botocore's attempts times ours), then fails as a transient error naming the endpoint."""
    proxy = FaultyProxy(seaweed.endpoint, failures=0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("MLC_FARM_RETRY_SECONDS", "3")
    try:
        store = open_store(s3_store_url)
        f = tmp_path / "config.json"
        digest = random_file(f, 1000, seed=4)
        proxy.burst(3600)
        before, start = proxy.seen, time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"kept failing \(HTTP 500\) while reading blobs/") as e:
            store.put_blob(f, digest)
        took, requests = time.monotonic() - start, proxy.seen - before
    finally:
        proxy.close()
    assert e.value.exit_code == 3 and is_transient(e.value)
    assert took < 10
    assert 2 <= requests <= 8, f"{requests} requests in {took:.1f} s"


def test_gc_removes_only_unreferenced_old_blobs_and_stale_uploads(s3_store_url: str, tmp_path: Path) -> None:
    store = open_store(s3_store_url)
    a, b = tmp_path / "a", tmp_path / "b"
    keep = store_files(store, {"a": a} if random_file(a, 10, 1) else {})[0]
    orphan = random_file(b, 20, 2)
    store.put_blob(b, orphan)
    store.write_json("builds/k.json", _record(keep))
    s3_client().create_multipart_upload(Bucket=bucket_of(s3_store_url), Key="farm/blobs/sha256/abandoned")

    young = collect(store, timedelta(hours=1))
    assert young.blobs == [] and young.uploads == []
    dry = collect(store, timedelta(0), dry_run=True)
    assert dry.blobs == [blob_path(orphan)] and dry.uploads == ["farm/blobs/sha256/abandoned"]
    assert store.has_blob(orphan)
    done = collect(store, timedelta(0))
    assert done.bytes == 20
    assert not store.has_blob(orphan) and store.has_blob(keep.sha256)


def _record(entry) -> dict:
    from mlc_farm.records.schema import ConvertRecord, now

    return ConvertRecord(
        key="k", files=[entry], inputs={}, toolchain={}, started_at=now(), finished_at=now(), seconds={}
    ).model_dump(mode="json")


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_build_pull_and_presigned_urls_against_s3(s3_store_url: str, tiny_matrix: Path, tmp_path: Path) -> None:
    done = cli("build", "--matrix", str(tiny_matrix), "--store", s3_store_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "8 cells: 8 ok (convert 4 built; config 4 built; library 4 built; reference 2 built; check 8 built)"
        in done.stdout
    )
    assert cli("verify", "--store", s3_store_url).returncode == 0
    listing = cli("ls", "--store", s3_store_url)
    assert "tiny-llama-b" in listing.stdout and "cpu, vulkan" in listing.stdout
    out = tmp_path / "pulled"
    assert cli("pull", "tiny-llama-a", "q0f16", "-o", str(out), "--store", s3_store_url).returncode == 0
    assert [unhashed(p.name) for p in (out / "libs").glob("*-vulkan-*")] == ["tiny-llama-a-q0f16-vulkan.so"]

    urls = cli("url", "tiny-llama-a", "q0f16", "--device", "cpu", "--expires", "600", "--store", s3_store_url)
    assert urls.returncode == 0, urls.stderr
    rows = [line.split("\t") for line in urls.stdout.splitlines()]
    assert unhashed(rows[0][0]) == "libs/tiny-llama-a-q0f16-cpu.so" and len(rows) == 6
    for rel, size, sha, link in rows:
        assert "Expires=" in link or "X-Amz-Expires=600" in link
        data = urllib.request.urlopen(link, timeout=30).read()  # no credentials needed
        assert len(data) == int(size) and hashlib.sha256(data).hexdigest() == sha
        assert data == (out / rel).read_bytes()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("fault", ["500", "reset"])
def test_a_burst_of_500s_is_ridden_out_running_each_build_once(
    seaweed: SeaweedS3,
    s3_store_url: str,
    tiny_matrix: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    """15 s of HTTP 500 from S3 (or of the server down: every connection reset) while the builds upload: within
    the retry budget, waited out from the outputs on disk, never by running the toolchain again."""
    proxy = FaultyProxy(seaweed.endpoint, failures=0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    calls = tmp_path / "calls.log"

    def burst_when_the_first_step_runs() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not toolchain_calls(calls):
            time.sleep(0.05)
        proxy.burst(15, fault)

    watcher = threading.Thread(target=burst_when_the_first_step_runs, daemon=True)
    watcher.start()
    try:
        done = run_cli(
            "build", "--matrix", str(tiny_matrix), "--store", s3_store_url, env={"MLC_DOUBLE_LOG": str(calls)}
        )
    finally:
        proxy.close()
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.burst_until > 0  # the burst did happen during the build
    assert steps(calls) == {"convert_weight": 4, "gen_config": 4, "compile": 4}  # each build once


def test_one_store_per_process_shares_its_client_until_closed(
    s3_store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task of a build opens the store by URL: they share one client and pool of
    threads (one bound on memory), until the process closes them at exit."""
    from mlc_farm.store import close_stores

    first = open_store(s3_store_url)
    assert open_store(s3_store_url) is first
    monkeypatch.setenv("MLC_FARM_S3_CHUNK_MB", "6")  # other settings: another client
    other = open_store(s3_store_url)
    assert other is not first and isinstance(other, S3Store) and other.chunk_size == 6 * 1024 * 1024
    close_stores()
    assert isinstance(first, S3Store) and first._pool._shutdown  # type: ignore[attr-defined]
    again = open_store(s3_store_url)
    assert again is not other and again.read_json("nothing.json") is None
