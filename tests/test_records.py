"""Build records as a union told apart by kind: each kind's findings are its record's alone, refused on another's
where they are made, and the store keeps schema 2's one shape so that records signed before still verify."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from mlc_farm.checks.fidelity import Fidelity
from mlc_farm.checks.results import FitCheck, RunCheck, Validation
from mlc_farm.digests import digest
from mlc_farm.records.schema import (
    RECORD,
    CheckRecord,
    ConvertRecord,
    Kind,
    LibraryRecord,
    of_kind,
    stored,
)
from mlc_farm.store.local import LocalStore
from mlc_farm.trust import attestations

AT = datetime(2026, 12, 7, tzinfo=timezone.utc)
PASSED = Validation(fits=FitCheck(status="passed"), run=RunCheck(status="passed"))


def fields(kind: str) -> dict[str, Any]:
    return {"key": "a" * 64, "kind": kind, "files": [], "inputs": {}, "toolchain": {}, "started_at": AT,
            "finished_at": AT, "seconds": {}}  # fmt: skip


def test_each_kind_reads_as_its_own_record() -> None:
    for kind in get_args(Kind):
        record = RECORD.validate(fields(kind))
        assert record.kind == kind and type(record).__name__.lower().startswith(kind)
    with pytest.raises(ValidationError, match=r"tag 'weights' .* does not match"):
        RECORD.validate(fields("weights"))


def test_a_kinds_findings_on_another_kind_are_refused_where_they_are_made() -> None:
    with pytest.raises(ValidationError, match="validation"):
        ConvertRecord(**fields("convert"), validation=PASSED)
    with pytest.raises(ValidationError, match="fidelity"):  # a check's figure on a library's record
        RECORD.validate({**fields("library"), "fidelity": Fidelity(status="not measured")})
    with pytest.raises(ValidationError, match="library_metadata"):
        RECORD.validate({**fields("check"), "library_metadata": {"model_type": "llama"}})


def test_a_record_of_another_kind_under_a_planned_key_is_not_that_build() -> None:
    convert = RECORD.validate(fields("convert"))
    assert of_kind(convert, LibraryRecord) is None and of_kind(convert, ConvertRecord) is convert
    assert of_kind(None, CheckRecord) is None


# A library record as the farm stored it before records were split by kind: every kind's fields, null where not
# its own. Written out here, not made by the code under test.
BEFORE = {
    **{k: v for k, v in fields("library").items() if k not in ("started_at", "finished_at")},
    "schema_version": 2,
    "started_at": "2026-12-07T00:00:00Z",
    "finished_at": "2026-12-07T00:00:00Z",
    "log": None,
    "flow_run": None,
    "host": "worker-1",
    "image": None,
    "library_metadata": {"model_type": "llama"},
    "validation": {"fits": {"status": "passed", "detail": ""}, "run": {"status": "passed"}},
    "cuda_archs": None,
    "validated_with": None,
    "fidelity": None,
    "cell": None,
    "jit_keys": None,
    "attestation": None,
}


def test_a_record_stored_before_the_split_reads_without_a_note_and_keeps_its_signed_digest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mlc_farm.records.reads import load_record

    store = LocalStore(tmp_path / "store")
    store.write_json(f"builds/{'a' * 64}.json", BEFORE)
    with caplog.at_level("WARNING", logger="mlc_farm"):
        record = load_record(store, "a" * 64)
    assert isinstance(record, LibraryRecord) and caplog.records == []
    assert record.library_metadata == {"model_type": "llama"}
    shape = stored(record)  # what the store keeps, what an older farm reads and what a build's digest is over
    assert set(shape) == set(BEFORE) and all(shape[k] is None for k in ("fidelity", "cell", "jit_keys"))
    assert attestations.record_digest(record) == digest({k: v for k, v in shape.items() if k != "attestation"})
    assert set(stored(RECORD.validate(fields("convert")))) == set(BEFORE)
