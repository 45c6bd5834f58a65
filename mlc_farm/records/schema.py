"""The documents the farm writes into a store: build and failure records, catalog entries, and the checks and
files they hold.

A build record lists one build's files by sha256, with provenance and (for a library) its validation. A
catalog entry is one model x quantization: one convert build (weights), one config build (mlc-chat-config
and tokenizer) and a library per device. Every document carries `schema_version`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, TypeAdapter, model_validator

from mlc_farm.checks.fidelity import Fidelity
from mlc_farm.checks.memory import MemoryEstimate
from mlc_farm.checks.results import Validation
from mlc_farm.checks.runtime import LibRuntime
from mlc_farm.names import BuildKey, Name, RelPath, Sha256
from mlc_farm.store.documents import Tagged
from mlc_farm.toolchain.jit import JitKey
from mlc_farm.written import Written

SCHEMA_VERSION: Literal[2] = 2


Kind = Literal["convert", "config", "library", "reference", "check"]


class FileEntry(Written):
    """One output file. Its path becomes a path on a user's disk (pull, publish, install), so it is checked
    wherever a record is read (mlc_farm/names.py)."""

    path: RelPath
    size: int = Field(ge=0)
    sha256: Sha256


# Schema 2 keeps every build record in one shape: the fields of each kind's findings are in every record, null
# where they are not its kind's. The store keeps that shape (an older farm reads it, and a record's digest, which
# its build signed, is over it); the types below are per kind. Frozen: a new kind's fields are its own alone.
SHARED_SHAPE = ("library_metadata", "validation", "cuda_archs", "validated_with", "fidelity", "cell", "jit_keys")


class Built(Written):
    """What every build record says, whatever its kind: its outputs by sha256, the inputs of its key, the
    toolchain, the time each step took, the log, where it ran and its attestation. A kind's own findings are
    fields of its record alone (LibraryRecord, CheckRecord), so a library's validation set on a convert record
    is refused where it is made."""

    schema_version: Literal[2] = SCHEMA_VERSION
    key: BuildKey
    kind: Kind
    files: list[FileEntry]
    inputs: dict[str, Any]  # the key's inputs: hashed as they are, so open by design (mlc_farm/planning/keys.py)
    toolchain: dict[str, Any]  # the toolchain's own report of itself (ToolchainInfo.key_part), kept as it said it
    started_at: datetime
    finished_at: datetime
    seconds: dict[str, float]
    log: FileEntry | None = None
    flow_run: str | None = None
    host: str | None = None
    image: str | None = None  # the worker image it was built in (MLC_FARM_IMAGE, which the images set)
    # The build's signed in-toto statement of its outputs and of this record, made where it was built before
    # anything was uploaded (mlc_farm/trust/attestations.py); None in records from before attestations.
    attestation: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_shared_shape(cls, data: Any) -> Any:
        """A stored record's null fields of other kinds (SHARED_SHAPE) are not its own; a set one is refused."""
        if isinstance(data, dict) and any(data.get(k, 0) is None for k in SHARED_SHAPE if k not in cls.model_fields):
            return {k: v for k, v in data.items() if v is not None or k not in SHARED_SHAPE or k in cls.model_fields}
        return data

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class ConvertRecord(Built):
    kind: Literal["convert"] = "convert"


class ConfigRecord(Built):
    kind: Literal["config"] = "config"


class ReferenceRecord(Built):
    kind: Literal["reference"] = "reference"


class LibraryRecord(Built):
    kind: Literal["library"] = "library"
    # What `vm["_metadata"]()` said, to check the fit of every model that shares the library.
    library_metadata: dict[str, Any] | None = None
    validation: Validation | None = None
    # CUDA: the SM architectures of the images the library holds, read from it (mlc_farm/checks/device_code.py).
    cuda_archs: list[str] | None = None
    # The model whose convert and config builds the validation used.
    validated_with: dict[str, str] | None = None


class CheckRecord(Built):
    kind: Literal["check"] = "check"
    validation: Validation | None = None
    # The cell's fidelity to its source (judged against the thresholds of the night it ran), and the cell's
    # names in the matrix (not in the key: the history of a cell follows them).
    fidelity: Fidelity | None = None
    cell: dict[str, Name] | None = None
    # The names mlc_llm's JIT cache gives the library with these weights' config, per device string.
    jit_keys: dict[str, JitKey] | None = None


# A build record: one of the kinds, told apart by `kind` (RECORD reads and makes one from its fields).
BuildRecord = Annotated[
    ConvertRecord | ConfigRecord | LibraryRecord | ReferenceRecord | CheckRecord, Field(discriminator="kind")
]
RECORD: Tagged[BuildRecord] = Tagged("build record", TypeAdapter(BuildRecord))
R = TypeVar("R", bound=Built)


def stored(record: Built) -> dict[str, Any]:
    """The record as the store keeps it (SHARED_SHAPE), and as its digest is taken."""
    return {**dict.fromkeys(SHARED_SHAPE), **record.model_dump(mode="json")}


def of_kind(record: Built | None, kind: type[R]) -> R | None:
    """`record` if it is of `kind`; a record of another kind under a key planned as this one (a tampered store)
    is not this build, so none."""
    return record if isinstance(record, kind) else None


class FailedCell(Written):
    """A matrix cell a failed build was for; `device` None for weights and config (every device of the cell)."""

    model: Name
    quantization: Name
    device: Name | None = None


class FailureRecord(Written):
    """The last failure of a build key: what failed, the tool's own error and the log. It keeps the log alive
    (gc) so that the links a failed run printed still work, and goes once the key builds."""

    schema_version: Literal[2] = SCHEMA_VERSION
    key: BuildKey
    kind: Kind
    label: str
    cells: list[FailedCell]
    error: str
    log: FileEntry | None = None
    failed_at: datetime
    flow_run: str | None = None
    host: str | None = None

    def about(self, model: str, quantization: str, device: str | None) -> bool:
        """Whether this failure concerns the cell (model, quantization[, device])."""
        return any(
            c.model == model and c.quantization == quantization and (device is None or c.device in (None, device))
            for c in self.cells
        )


class LibRef(Written):
    key: BuildKey
    file: FileEntry
    target: str
    host: str
    validation: Validation
    memory: MemoryEstimate | None = None  # with this entry's weights; None when the library has no metadata
    fidelity: Fidelity | None = None  # with this entry's weights, on the device (None: from before fidelity)
    check: BuildKey | None = None  # the check build that measured it
    runtime: LibRuntime | None = None  # what it was compiled with and needs (None: from before runtimes)
    jit_keys: dict[str, JitKey] = Field(
        default_factory=dict
    )  # mlc_llm's JIT cache name per device string, with this entry's config


class CatalogEntry(Written):
    schema_version: Literal[2] = SCHEMA_VERSION
    model: Name
    quantization: Name
    source: dict[str, Any]
    convert: BuildKey
    config: BuildKey
    libs: dict[Name, LibRef]
    # Planned devices with no validated library yet (only in an entry that had no complete predecessor).
    missing: list[Name] = Field(default_factory=list)
    updated_at: datetime
    # The farm's signature of this entry under its name (mlc_farm/trust/entry_signatures.py): the files of its pull,
    # this document, a version that only grows and an expiry; None in entries from before it.
    signature: dict[str, Any] | None = None


def now() -> datetime:
    return datetime.now(timezone.utc)


def referenced_blobs(record: Built) -> list[FileEntry]:
    return [*record.files, *([record.log] if record.log else [])]
