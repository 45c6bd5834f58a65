"""Store objects that are not what they claim (issue 37, item 6): a FIFO, a link to /dev/zero, a blob larger than
its record says, a 300 MB document and one nested 200,000 deep each end at once with one named error, on the local
store; on S3 a blob larger than its recorded size is refused at its first range."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlc_farm.errors import CorruptBlobError, DamagedDocumentError, MissingObject, StoreError
from mlc_farm.store.layout import blob_path
from mlc_farm.store.local import LocalStore
from tests.helpers import ROOT, UNPUBLISHED_CELL, run_cli

SHA = hashlib.sha256(b"x").hexdigest()


def blob_at(store: Path, sha: str = SHA) -> Path:
    path = store / blob_path(sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def quickly(call, error: type[Exception], match: str) -> None:
    started = time.monotonic()
    with pytest.raises(error, match=match):
        call()
    assert time.monotonic() - started < 5


def test_a_fifo_or_a_link_in_the_store_is_refused_without_reading_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    os.mkfifo(blob_at(tmp_path / "store"))
    quickly(lambda: store.get_blob(SHA, tmp_path / "out"), StoreError, "not a regular file")
    assert store.check_blob(SHA) == "not a regular file: refused (the store was tampered with)"
    blob_at(tmp_path / "store").unlink()
    blob_at(tmp_path / "store").symlink_to("/dev/zero")
    quickly(lambda: store.get_blob(SHA, tmp_path / "out", size=1), StoreError, "is a link, not a file")
    (tmp_path / "store" / "catalog" / "m").mkdir(parents=True)
    os.mkfifo(tmp_path / "store" / "catalog" / "m" / "q.json")
    quickly(lambda: store.read_json("catalog/m/q.json"), StoreError, "not a regular file")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()
    with pytest.raises(MissingObject):
        store.get_blob(hashlib.sha256(b"y").hexdigest(), tmp_path / "out")


def test_a_blob_larger_than_its_record_says_stops_at_the_first_byte_too_many(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    with blob_at(tmp_path / "store").open("wb") as f:
        f.truncate(2**40)  # a terabyte, sparse: read to the end it would fill any disk
    quickly(lambda: store.get_blob(SHA, tmp_path / "out", size=1), CorruptBlobError, "larger than its recorded 1")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()


@pytest.mark.parametrize("shape", ["300 MB", "200,000 deep"])
def test_a_huge_or_deep_document_is_one_named_error(tmp_path: Path, shape: str) -> None:
    root = tmp_path / "store"
    doc = root / "catalog" / "tiny" / "q0f16.json"
    doc.parent.mkdir(parents=True)
    if shape == "300 MB":
        with doc.open("wb") as f:
            f.write(b'{"a": "')
            f.truncate(300 * 2**20)  # sparse
    else:
        doc.write_text('{"a": ' + "[" * 200_000 + "]" * 200_000 + "}")
    quickly(lambda: LocalStore(root).read_json("catalog/tiny/q0f16.json"), DamagedDocumentError,
            "over 32 MiB" if shape == "300 MB" else "nested deeper than 64")  # fmt: skip
    for args in (["ls"], ["pull", "tiny", "q0f16", "-o", str(tmp_path / "out")], ["verify"]):
        said = run_cli(*args, "--store", str(root))
        assert said.returncode in (0, 1, 2), (args, said.stdout, said.stderr)
        assert "Traceback" not in said.stdout + said.stderr and "internal error" not in said.stderr, said.stderr
    assert not (tmp_path / "out").exists()


def test_s3_refuses_a_blob_larger_than_its_record_at_the_first_range(s3_store_url: str, tmp_path: Path) -> None:
    from mlc_farm.store import open_store

    store = open_store(s3_store_url)
    big = tmp_path / "big"
    big.write_bytes(b"z" * (3 * 2**20))
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    store.put_blob(big, sha)
    with pytest.raises(CorruptBlobError, match="larger than its recorded 10 bytes"):
        store.get_blob(sha, tmp_path / "out", size=10)
    assert not (tmp_path / "out").exists()
    store.get_blob(sha, tmp_path / "out", size=big.stat().st_size)
    assert (tmp_path / "out").read_bytes() == big.read_bytes()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="mounts a small filesystem: root")
@pytest.mark.usefixtures("prefect_api")  # the builds' flows on the suite's server: the store is what is tested
@pytest.mark.parametrize("how", ["full", "read-only"])
def test_a_full_or_read_only_store_ends_the_build_with_its_summary(tiny_models: Path, tmp_path: Path, how: str) -> None:
    """The store's disk fills up (a 300 kB filesystem) or turns read-only during a build: the run ends exit 1
    with its summary and the store's own words, never a bare OSError (issue 37, item 7)."""
    matrix = tiny_models / f"one-{tmp_path.name}.yaml"
    matrix.write_text(UNPUBLISHED_CELL)
    store = tmp_path / "store"
    store.mkdir()
    build = f"{sys.executable} -m mlc_farm.cli build --matrix {matrix} --store {store}"
    script = (
        f"mount -t tmpfs -o size=300k tmpfs {store} && {build}"
        if how == "full"
        else f"mount -t tmpfs -o size=64m tmpfs {store} && {build} >/dev/null && "
        # Read-only as soon as the rebuild's first toolchain step starts (it then sleeps 5 s), after the build
        # before it ended (the braces keep that list out of the background). One build at a time, so that no
        # upload holds a file open for writing then (a remount is refused while one does); the remount is still
        # tried until it holds, for at most 5 s, with its output away from the test's pipes.
        f"{{ (while [ ! -s {tmp_path}/calls ]; do sleep 0.1; done; for _ in $(seq 100); do "
        f"mount -o remount,ro {store} && echo remounted > {tmp_path}/ro && break; sleep 0.05; done) "
        f">/dev/null 2>&1 & }} && MLC_FARM_PARALLEL=1 MLC_DOUBLE_LOG={tmp_path}/calls MLC_DOUBLE_SLEEP=5 "
        f"{build} --force"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=600)
    said = " ".join((done.stdout + done.stderr).split())
    assert how == "full" or (tmp_path / "ro").exists(), f"the store was never remounted read-only: {said}"
    assert done.returncode == 1, said
    assert "mlc-farm build summary" in said and "internal error" not in said and "Traceback" not in said, said
    assert ("No space left on device" if how == "full" else "Read-only file system") in said, said


def test_a_field_the_farm_does_not_know_is_refused_when_written_and_dropped_with_a_note_when_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import datetime, timezone

    from pydantic import ValidationError

    from mlc_farm.checks.results import FitCheck, RunCheck, Validation
    from mlc_farm.records.schema import RECORD, LibraryRecord
    from mlc_farm.store.documents import read_document

    at = datetime(2026, 12, 6, tzinfo=timezone.utc)
    fields = {"key": SHA, "kind": "library", "files": [], "inputs": {}, "toolchain": {}, "started_at": at,
              "finished_at": at, "seconds": {"compile": 1.0}}  # fmt: skip
    with pytest.raises(ValidationError, match="validaton"):  # a misspelt field is an error where it is made
        LibraryRecord(**fields, validaton=None)
    with pytest.raises(ValidationError, match="tokens_per_sec"):
        RunCheck(status="passed", tokens_per_sec=1.0)
    record = LibraryRecord(
        **fields, validation=Validation(fits=FitCheck(status="passed"), run=RunCheck(status="passed"))
    )
    newer = record.model_dump(mode="json") | {"energy_joules": 3.5}  # what a newer mlc-farm may write
    newer["validation"]["run"]["power_watts"] = 300
    store = LocalStore(tmp_path / "store")
    store.write_json("builds/newer.json", newer)
    with caplog.at_level("WARNING", logger="mlc_farm"):
        read = read_document(store, "builds/newer.json", RECORD)
        assert read_document(store, "builds/newer.json", RECORD) == read
    assert read == record
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "fields this mlc-farm does not know (energy_joules, power_watts), ignored (a newer mlc-farm wrote them)"
    ]  # once
