"""The S3 store: same layout and write order as the local one, on any S3 server (AWS, MinIO, Ceph, R2,
SeaweedFS).

Endpoint, region and credentials come from the standard AWS environment and config (AWS_ENDPOINT_URL,
profiles, instance roles); path-style addressing when an endpoint is given. A blob goes up in parts read once:
each part is hashed into the file's sha256 as it is read and sent in parallel with a CRC32 the server checks,
and the upload is completed only if the bytes sent hash to the blob's name. Blobs come down as parallel ranged
GETs into a temporary file, hashed as they land, and renamed only once the sha256 matches. At most
MLC_FARM_S3_CONCURRENCY parts or ranges are in memory at once, across every transfer of a store.

Retries: every request (a HEAD, a GET and its body, a PUT, a part of an upload, a page of a listing) is retried
by the one layer `mlc_farm.retry.retry_transient` for MLC_FARM_RETRY_SECONDS on 5xx, throttling and dropped
connections; botocore's own retries are off, so attempts never multiply. What outlives the budget is
StoreUnavailable (exit 3); permanent errors raise StoreError naming the bucket and what to check.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import itertools
import json
import os
import random
import re
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from mlc_farm import credentials
from mlc_farm.errors import (
    BadInput,
    CorruptBlobError,
    DamagedDocumentError,
    MissingObject,
    StoreError,
    StoreUnavailable,
    WriteConflict,
    redact_urls,
)
from mlc_farm.names import shorten
from mlc_farm.retry import retry_transient
from mlc_farm.settings import Settings, load_settings
from mlc_farm.store.documents import MAX_DOCUMENT, parse_document
from mlc_farm.store.layout import blob_path
from mlc_farm.store.s3_errors import InvalidRange, dropped, farm_error, no_bucket, s3_errors

MB = 1024 * 1024
_MAX_PARTS = 10_000  # S3's limit on the parts of one upload
T = TypeVar("T")
_ANSWERED: set[tuple[str | None, str]] = set()  # (endpoint, bucket) pairs that answered a ping in this process
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's bucket naming rules
_ENDPOINT = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?")


def _crc32(data: bytes | memoryview) -> bytes:
    return zlib.crc32(data).to_bytes(4, "big")


# The checksums a blob's HEAD may carry (CRC32 as this store writes them, SHA-256 as it wrote them before),
# each as the digest of one part; S3 reports a multipart object's as the digest of its parts' digests, "-N".
_PART_DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "ChecksumCRC32": _crc32,
    "ChecksumSHA256": lambda data: hashlib.sha256(data).digest(),
}


def client_identity() -> list[str | None]:
    """What an S3 client is made of beside the URL and settings (the environment's AWS_* names and the
    credentials found), as digests: a store is shared only by callers that would make the same client."""
    creds = credentials.aws()
    values = [
        *sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("AWS_")),
        *map(str, dataclasses.astuple(creds)),
    ]
    return [hashlib.sha256(v.encode()).hexdigest() for v in values]


class S3Store:
    readers = 16  # each document is a GET: sixteen at once read a catalog of thousands in seconds

    def __init__(self, url: str, settings: Settings | None = None):
        settings = settings or load_settings()
        # Ranged GETs of 8 MB: small enough to keep memory low, large enough for full speed.
        self.range_size = settings.s3_range_mb * MB
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BadInput(f"{shorten(url)}: expected s3://bucket/prefix")
        if not _BUCKET.fullmatch(bucket):
            raise BadInput(
                f"store {shorten(url)}: {shorten(bucket)} is not a bucket name (3 to 63 lowercase letters, "
                "digits, '.' and '-', starting and ending with a letter or digit)"
            )
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        creds = credentials.aws()
        session = boto3.session.Session(
            aws_access_key_id=creds.access_key_id,
            aws_secret_access_key=creds.secret_access_key,
            aws_session_token=creds.session_token,
            region_name=creds.region,
        )
        endpoint = creds.endpoint
        if endpoint and not _ENDPOINT.fullmatch(endpoint):
            raise BadInput(
                f"AWS_ENDPOINT_URL {shorten(redact_urls(endpoint.split('?')[0]))}: expected http(s)://HOST"
                "[:PORT][/PATH], with no credentials or query in it"
            )
        # A silent server is given up after a quarter of the retry budget (at most 60 s), so that a stalled
        # answer leaves the budget time to retry, and the budget holds.
        self.retry_seconds = settings.retry_seconds
        self.read_timeout = min(60.0, max(1.0, settings.retry_seconds / 4))
        config = _client_config(endpoint, self.read_timeout)
        self.endpoint = endpoint
        if session.get_credentials() is None:
            raise StoreError(
                f"no AWS credentials found for {self.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                "or AWS_PROFILE, or MLC_FARM_AWS_CREDENTIALS_BLOCK (an AwsCredentials block), or run where an "
                "instance role applies"
            )
        self._session, self._config = session, config
        self.client = session.client("s3", endpoint_url=endpoint, config=config)
        # Parts of 16 MB, 8 at a time: fast on one link, and memory near 8 x 16 MB whatever the file sizes.
        self.chunk_size, self.concurrency = settings.s3_chunk_mb * MB, settings.s3_concurrency
        self._bucket_ok = False
        # One pool and one window for the store: the parts and ranges of every transfer share them (as the AWS
        # CLI does), so memory is bounded by the store, not by the number of files moving at once.
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency)
        self._window = threading.Semaphore(self.concurrency)
        self._buffers = _Buffers(self.chunk_size, self._window)
        self._ranges = _Buffers(self.range_size)  # a download's ranges: _get_rest holds the window for them
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.client.meta.events.register("before-call.s3", self._count)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()

    def check_writable(self) -> None:
        """Before a build spends anything: the credentials may write here (a small object, put and deleted)."""
        name = f"tmp/writable-{uuid.uuid4().hex}"
        self.write_text(name, "", "text/plain")
        self.delete(name)

    def ping(self, seconds: float = 2.5, attempts: int = 4) -> None:
        """Fail fast when the endpoint does not answer: a HEAD of the bucket with short timeouts and a few
        attempts (a 5xx blip is still ridden out), before the generous timeouts of real work (an endpoint that
        never answers would otherwise take minutes to give up). Once per process and bucket: a build's tasks
        open the store again while it runs, and an outage then is for the retry budget to wait out."""
        if (self.endpoint, self.bucket) in _ANSWERED:
            return
        quick = Config(connect_timeout=seconds, read_timeout=seconds)
        client = self._session.client("s3", endpoint_url=self.endpoint, config=self._config.merge(quick))
        try:
            retry_transient(
                lambda: client.head_bucket(Bucket=self.bucket), budget=seconds * attempts, transient=dropped
            )
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as e:
            raise StoreUnavailable(
                f"cannot reach {self._where} for s3://{self.bucket}: no answer in {seconds * attempts:g} s "
                f"({type(e).__name__}); check AWS_ENDPOINT_URL / MLC_FARM_STORE and the network"
            ) from None
        except (ClientError, BotoCoreError) as e:
            error = farm_error(e, self._names, self.bucket, "checking the bucket")
            if isinstance(error, MissingObject):
                raise no_bucket(self._names, self.bucket) from None
            if not isinstance(error, StoreUnavailable):  # a 5xx answers: the real work's retries ride it out
                raise error from None
        _ANSWERED.add((self.endpoint, self.bucket))

    def _count(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.requests[model.name] += 1

    @property
    def _where(self) -> str:
        """The endpoint, for messages."""
        return self.endpoint or "AWS S3"

    @property
    def _names(self) -> str:
        """The bucket and its endpoint, for messages."""
        return f"s3://{self.bucket}" + (f" at {self.endpoint}" if self.endpoint else "")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """`request` under the one retry layer, its errors in the farm's words (mlc_farm/store/s3_errors.py): 5xx,
        throttling and dropped connections are retried for MLC_FARM_RETRY_SECONDS, then StoreUnavailable naming
        the endpoint; other errors (missing, denied, conflict) reach the caller at once."""

        def attempt() -> T:
            with s3_errors(self._names, self.bucket, what):
                return request()

        return retry_transient(attempt, budget=self.retry_seconds, transient=lambda e: isinstance(e, StoreUnavailable))

    def _head(self, name: str, checksums: bool = False) -> dict[str, Any] | None:
        extra = {"ChecksumMode": "ENABLED"} if checksums else {}
        try:
            head: dict[str, Any] = self._call(
                f"reading {name}", lambda: self.client.head_object(Bucket=self.bucket, Key=self._key(name), **extra)
            )
        except MissingObject:
            # HEAD has no body: a missing bucket also answers 404, so tell the two apart once.
            if not self._bucket_ok:
                self._check_bucket()
            return None
        return head

    def _check_bucket(self) -> None:
        try:
            self._call("checking the bucket", lambda: self.client.head_bucket(Bucket=self.bucket))
        except MissingObject:
            raise no_bucket(self._names, self.bucket) from None
        self._bucket_ok = True

    def has_blob(self, sha256: str) -> bool:
        return self._head(blob_path(sha256)) is not None

    def put_blob(self, path: Path, sha256: str, progress: Callable[[int], None] | None = None) -> bool:
        # One HEAD: the server keeps a checksum (per part) of what was uploaded with one. Anything else under
        # this name (another size, no checksum, other bytes) is replaced.
        head = self._head(blob_path(sha256), checksums=True)
        if head is not None and self._holds(head, path):
            if progress:
                progress(path.stat().st_size)
            return False
        key = self._key(blob_path(sha256))
        with path.open("rb") as f:
            if path.stat().st_size >= self.chunk_size:
                self._put_parts(f, path, key, sha256, progress)
                return True
            buffer = self._buffers.take()
            try:
                part = memoryview(buffer)[: f.readinto(buffer)]
                _refuse_changed(path, sha256, hashlib.sha256(part).hexdigest())
                crc = _b64(_crc32(part))
                self._call(
                    f"uploading {path.name}",
                    lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=_Body(part), ChecksumCRC32=crc),
                )
            finally:
                self._buffers.give(buffer)
        if progress:
            progress(len(part))
        return True

    def _holds(self, head: dict[str, Any], path: Path) -> bool:
        """Whether the object `head` describes is `path`'s bytes: its size, and its checksum part by part."""
        size = path.stat().st_size
        field = next((name for name in _PART_DIGESTS if head.get(name)), None)
        if field is None or head.get("ContentLength") != size:
            return False
        digest = _PART_DIGESTS[field]
        with path.open("rb") as f:
            if size < self.chunk_size:
                return bool(head[field] == _b64(digest(f.read())))
            parts = [digest(block) for block in iter(lambda: f.read(self.chunk_size), b"")]
        return bool(head[field] == f"{_b64(digest(b''.join(parts)))}-{len(parts)}")

    def _put_parts(
        self, f: io.BufferedReader, path: Path, key: str, sha256: str, progress: Callable[[int], None] | None
    ) -> None:
        """A multipart upload read once: each part is hashed in order as it is read, then sent in parallel from
        memory (a failed part is sent again, not the file); completed only if the file hashed to its name, else
        aborted, so readers never see it. At most the store's window of parts is held at once."""
        what, size = f"uploading {path.name}", path.stat().st_size
        if -(-size // self.chunk_size) > _MAX_PARTS:
            raise BadInput(
                f"{path}: {size} bytes is over S3's {_MAX_PARTS} parts of MLC_FARM_S3_CHUNK_MB={self.chunk_size // MB}"
            )
        upload = self._call(
            what, lambda: self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="CRC32")
        )["UploadId"]

        failed = threading.Event()

        def send(number: int, buffer: bytearray, part: memoryview) -> dict[str, Any]:
            try:
                crc = _b64(_crc32(part))
                sent = self._call(
                    what,
                    lambda: self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number, Body=_Body(part),
                        ChecksumCRC32=crc,
                    ),
                )  # fmt: skip
                if progress:
                    progress(len(part))
                return {"PartNumber": number, "ETag": sent["ETag"], "ChecksumCRC32": crc}
            except BaseException:
                failed.set()
                raise
            finally:
                self._buffers.give(buffer)

        hasher, futures = hashlib.sha256(), dict[Future[dict[str, Any]], bytearray]()
        try:
            for number in itertools.count(1):
                buffer = self._buffers.take()
                if failed.is_set() or not (got := f.readinto(buffer)):
                    self._buffers.give(buffer)
                    break
                hasher.update(part := memoryview(buffer)[:got])
                futures[self._pool.submit(send, number, buffer, part)] = buffer
            parts = [x.result() for x in futures]
            _refuse_changed(path, sha256, hasher.hexdigest())
            self._complete(what, key, upload, parts)
        except BaseException:
            for x, buffer in futures.items():
                if x.cancel():  # never sent: its buffer is given back here
                    self._buffers.give(buffer)
            wait(futures)
            with contextlib.suppress(ClientError, BotoCoreError):  # else gc aborts it later
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def _complete(self, what: str, key: str, upload: str, parts: list[dict[str, Any]]) -> None:
        """The upload completed; a retry after an answer lost on the way finds it done (the upload is gone and
        the object there)."""
        try:
            self._call(
                what,
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
                ),
            )
        except MissingObject:
            if self._head(key[len(self._key("")) :]) is None:
                raise

    def check_blob(self, sha256: str, progress: Callable[[int], None] | None = None) -> str | None:
        def read() -> str:
            h = hashlib.sha256()
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(blob_path(sha256)))["Body"]
            for block in body.iter_chunks(1 << 20):
                h.update(block)
                if progress:
                    progress(len(block))
            return h.hexdigest()

        try:
            digest = self._call(f"reading blob {sha256[:12]}", read)
        except MissingObject:
            return "missing"
        return None if digest == sha256 else f"corrupt (its content hashes to {digest})"

    def get_blob(
        self, sha256: str, dest: Path, progress: Callable[[int], None] | None = None, size: int | None = None
    ) -> None:
        """Parallel ranged GETs written in place, hashed in order as they land: one pass, verified.

        At most `max_concurrency` ranges (plus each download's first) are in memory, whatever the sizes; an object
        larger than its recorded `size` is refused at its first range, before the rest is asked for.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        key, chunk = self._key(blob_path(sha256)), self.range_size
        hasher, buffer = hashlib.sha256(), self._ranges.take()
        try:
            with part.open("wb") as f:
                try:
                    first, total = self._get_range(key, 0, chunk, buffer)
                except MissingObject:
                    raise MissingObject(f"{self.url}/{blob_path(sha256)} is missing") from None
                if size is not None and total > size:
                    raise CorruptBlobError(
                        f"{self.url}/{blob_path(sha256)} is larger than its recorded {size} bytes ({total}): refused"
                    )
                f.write(first)
                hasher.update(first)
                if progress:
                    progress(len(first))
                if total > len(first):
                    self._get_rest(key, f.fileno(), len(first), total, chunk, hasher, progress)
            if hasher.hexdigest() != sha256:
                raise CorruptBlobError(f"{self.url}/{blob_path(sha256)} is corrupt (sha256 {hasher.hexdigest()})")
            os.replace(part, dest)
        finally:
            self._ranges.give(buffer)
            part.unlink(missing_ok=True)

    def _get_range(self, key: str, start: int, length: int, buffer: bytearray) -> tuple[memoryview, int]:
        """Bytes [start, start+length), read into `buffer`, and the object's total size. A body that is cut,
        stalls or comes short is fetched again, within the one retry budget: each read waits no longer than
        what is left of it."""
        deadline = time.monotonic() + self.retry_seconds

        def fetch() -> tuple[memoryview, int]:
            obj = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
            sent = int(obj.get("ContentLength") or 0)
            total = int(obj.get("ContentRange", f"/{sent}").rsplit("/", 1)[1])
            want = max(0, min(length, total - start))
            got = self._read_body(obj, key, deadline, memoryview(buffer)[: min(sent, want)])
            if got != want or sent != want:  # short, cut, or more than was asked for
                raise StoreUnavailable(
                    f"s3://{self.bucket} at {self._where} kept sending {sent if got == want else got} of the "
                    f"{want} bytes asked for at byte {start} of {key}; try again later"
                )
            return memoryview(buffer)[:got], total

        try:
            return self._call(f"downloading {key}", fetch)
        except InvalidRange:
            if start == 0:
                return memoryview(b""), 0  # an empty object has no byte 0
            raise

    def _read_body(self, obj: dict[str, Any], key: str, deadline: float, into: memoryview) -> int:
        """A response body read into `into` in blocks, none waiting past `deadline`: a stalled stream cannot hold
        a download past the retry budget. How many bytes came: all of `into`, or fewer where the stream ended."""
        body, got = obj["Body"], 0
        while got < len(into):
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(
                    f"s3://{self.bucket} at {self._where} stalled while sending {key}; try again later"
                )
            if left < self.read_timeout:
                with contextlib.suppress(AttributeError):  # a stream the server already closed
                    body.set_socket_timeout(left)
            if not (block := body.read(min(1 << 20, len(into) - got))):
                break
            into[got : got + len(block)] = block
            got += len(block)
        return got

    def _get_rest(
        self, key: str, fd: int, start: int, total: int, chunk: int, hasher: Any, progress: Callable[[int], None] | None
    ) -> None:
        """The ranges after the first, in parallel, hashed in order. Every range this download holds of the
        store's window, and its buffer, is given back however it ends (a failed range, a cancelled one), so a
        failure never starves later downloads and never leaves this one waiting."""
        window, lock, failed = self._window, threading.Lock(), threading.Event()
        landed: dict[int, tuple[bytearray, memoryview]] = {}
        state = {"next": start, "held": 0}

        def fetch(offset: int) -> None:
            buffer = self._ranges.take()
            try:
                data, _ = self._get_range(key, offset, min(chunk, total - offset), buffer)
                os.pwrite(fd, data, offset)  # a full disk fails the download as a cut stream does
            except BaseException:
                self._ranges.give(buffer)
                failed.set()
                raise
            if progress:
                progress(len(data))
            with lock:
                landed[offset] = (buffer, data)
                while state["next"] in landed:  # hash in order; free each range once hashed
                    hashed, block = landed.pop(state["next"])
                    hasher.update(block)
                    state["next"] += len(block)
                    state["held"] -= 1
                    window.release()
                    self._ranges.give(hashed)

        futures = []
        try:
            for offset in range(start, total, chunk):
                while not (got := window.acquire(timeout=0.2)) and not failed.is_set():
                    pass
                with lock:
                    state["held"] += got  # a slot taken as a range failed is given back with the others
                if failed.is_set():
                    break
                futures.append(self._pool.submit(fetch, offset))
            for f in futures:
                f.result()
        finally:
            for f in futures:
                f.cancel()
            wait(futures)
            with lock:
                for _ in range(state["held"]):
                    window.release()
                for buffer, _ in landed.values():
                    self._ranges.give(buffer)
                landed.clear()
        if state["next"] != total:
            raise StoreError(f"{key}: download stopped at byte {state['next']} of {total}")

    def read_json(self, name: str) -> dict[str, Any] | None:
        found = self._get_json(name)
        return found[0] if found else None

    def _get_json(self, name: str, damaged_ok: bool = False) -> tuple[dict[str, Any] | None, str] | None:
        def fetch() -> tuple[bytes | None, str]:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
            if obj.get("ContentLength", 0) > MAX_DOCUMENT:  # too large to be ours: refused unread
                obj["Body"].close()
                return None, obj["ETag"]
            return obj["Body"].read(MAX_DOCUMENT + 1), obj["ETag"]

        try:
            raw, etag = self._call(f"reading {name}", fetch)
        except MissingObject:
            return None
        try:
            if raw is None:
                raise DamagedDocumentError(f"{self.url}/{name} is damaged (over {MAX_DOCUMENT // 2**20} MiB)")
            return parse_document(f"{self.url}/{name}", raw), etag
        except DamagedDocumentError:
            if damaged_ok:
                return None, etag  # replaced whole by the conditional write that follows
            raise

    def write_json(self, name: str, data: dict[str, Any], **conditions: str) -> None:
        body = json.dumps(data, indent=2, sort_keys=True, default=str)
        self.write_text(name, body, "application/json", **conditions)

    def write_text(self, name: str, text: str, content_type: str, **conditions: str) -> None:
        """One PUT; with `conditions` (IfMatch / IfNoneMatch) a conflicting writer is WriteConflict."""
        body = text.encode()
        crc = _b64(_crc32(body))
        try:
            self._call(
                f"writing {name}",
                lambda: self.client.put_object(
                    Bucket=self.bucket, Key=self._key(name), Body=body, ContentType=content_type, ChecksumCRC32=crc,
                    **conditions,
                ),
            )  # fmt: skip
        except WriteConflict:
            if conditions:
                raise
            raise StoreError(f"{self._names}: another writer held {name} while writing it; try again") from None

    def update_json(
        self,
        name: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any]],
        replace_damaged: bool = True,
        attempts: int = 20,
    ) -> dict[str, Any]:
        """Optimistic concurrency: write only if the object is still the one read (If-Match/If-None-Match)."""
        for attempt in range(attempts):
            found = self._get_json(name, damaged_ok=replace_damaged)
            data = change(found[0] if found else None)
            try:
                self.write_json(name, data, **({"IfMatch": found[1]} if found else {"IfNoneMatch": "*"}))
                return data
            except WriteConflict:
                time.sleep(random.uniform(0, 0.05 * 2 ** min(attempt, 5)))
        raise StoreError(f"{self.url}/{name} kept changing under {attempts} concurrent updates; try again")

    def names(self, prefix: str) -> Iterator[str]:
        for name, _size, _mtime in self.list_with_info(prefix):
            yield name

    def list_with_info(self, prefix: str) -> Iterator[tuple[str, int, datetime]]:
        strip = len(self._key(""))
        after: dict[str, str] = {}
        while True:  # page by page, so that a retry repeats one page, not the whole listing
            page = self._call(
                f"listing {prefix}",
                lambda after=after: self.client.list_objects_v2(  # type: ignore[misc]
                    Bucket=self.bucket, Prefix=self._key(prefix), **after
                ),
            )
            for obj in page.get("Contents", []):
                yield obj["Key"][strip:], obj["Size"], obj["LastModified"]
            if not page.get("IsTruncated"):
                return
            after = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, name: str) -> None:
        self._call(f"deleting {name}", lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(name)))

    def abort_stale_uploads(
        self, older_than: timedelta, dry_run: bool = False, keep: Collection[str] = (), now: datetime | None = None
    ) -> list[str]:
        """Abort multipart uploads under the prefix begun before `older_than` ago (left by killed runs), except
        uploads of the blobs in `keep` (those of live builds)."""
        cutoff = (now or datetime.now(timezone.utc)) - older_than
        aborted = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self._key(""))
        for page in self._call("listing multipart uploads", lambda: list(pages)):
            for up in page.get("Uploads", []):
                if up["Initiated"] <= cutoff and up["Key"].rsplit("/", 1)[-1] not in keep:
                    if not dry_run:
                        with contextlib.suppress(MissingObject):  # aborted meanwhile (a concurrent gc)
                            self._call(
                                f"aborting the upload of {up['Key']}",
                                lambda up=up: self.client.abort_multipart_upload(  # type: ignore[misc]
                                    Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"]
                                ),
                            )
                    aborted.append(up["Key"])
        return aborted

    def presigned_url(self, name: str, expires: int) -> str:
        with s3_errors(self._names, self.bucket, f"signing a URL of {name}"):
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": self._key(name)}, ExpiresIn=expires
                )
            )


def _client_config(endpoint: str | None, read_timeout: float) -> Config:
    """botocore's settings for the store: no retries of its own (the one retry layer is `S3Store._call`), and no
    SHA-256 of each request's body for its signature. Over https botocore already skips that hash for a part that
    carries a checksum; over http (a store on the local network) it would hash every byte a third time. A part's
    CRC32 is checked by the server, and a blob's sha256 by the farm as it reads the file and on every download; a
    document's CRC32 likewise (`write_text`)."""
    return Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=5,
        read_timeout=read_timeout,
        max_pool_connections=32,
        s3={"payload_signing_enabled": False, **({"addressing_style": "path"} if endpoint else {})},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _refuse_changed(path: Path, sha256: str, got: str) -> None:
    """The bytes read for an upload are the bytes that were hashed (and signed): else nothing is stored."""
    if got != sha256:
        raise CorruptBlobError(f"{path} changed since it was hashed (its bytes now hash to {got}): not stored")


class _Buffers:
    """Buffers of one part or range each, reused: no new allocation per part or range. Fresh 8 MB allocations,
    one per range, made a download fault in three to four times the pages of the same download into reused
    buffers. With a `window`, taking a buffer also takes a place in it (an upload's parts: at most the window's
    count in memory)."""

    def __init__(self, size: int, window: threading.Semaphore | None = None):
        self._window, self._size = window, size
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        if self._window:
            self._window.acquire()
        with self._lock:
            return self._free.pop() if self._free else bytearray(self._size)

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            self._free.append(buffer)
        if self._window:
            self._window.release()


class _Body:
    """A part in its buffer, as the file botocore reads to sign and send it (and rewinds to send it again)."""

    def __init__(self, part: memoryview):
        self._part, self._at = part, 0

    def __len__(self) -> int:
        return len(self._part)

    def read(self, size: int = -1) -> bytes:
        end = len(self._part) if size is None or size < 0 else min(len(self._part), self._at + size)
        block = self._part[self._at : end].tobytes()
        self._at = end
        return block

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._at = offset + {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._part)}[whence]
        return self._at

    def tell(self) -> int:
        return self._at
