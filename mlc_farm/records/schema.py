"""The documents the farm writes into a store: build and failure records, catalog entries, and the checks and
files they hold.

A build record lists one build's files by sha256, with provenance and (for a library) its validation. A
catalog entry is one model x quantization: one convert build (weights), one config build (mlc-chat-config
and tokenizer) and a library per device. Every document carries `schema_version`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field

from mlc_farm.checks.fidelity import Fidelity
from mlc_farm.checks.memory import MemoryEstimate
from mlc_farm.checks.results import Validation
from mlc_farm.checks.runtime import LibRuntime
from mlc_farm.names import BuildKey, Name, RelPath, Sha256
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


class BuildRecord(Written):
    schema_version: Literal[2] = SCHEMA_VERSION
    key: BuildKey
    kind: Kind
    files: list[FileEntry]
    inputs: dict[str, Any]
    toolchain: dict[str, Any]
    started_at: datetime
    finished_at: datetime
    seconds: dict[str, float]
    log: FileEntry | None = None
    flow_run: str | None = None
    host: str | None = None
    image: str | None = None  # the worker image it was built in (MLC_FARM_IMAGE, which the images set)
    # Libraries: what `vm["_metadata"]()` said, to check the fit of every model that shares the library.
    library_metadata: dict[str, Any] | None = None
    validation: Validation | None = None
    # CUDA libraries: the SM architectures of the images the library holds, read from it (mlc_farm/checks/device_code.py).
    cuda_archs: list[str] | None = None
    # Libraries: the model whose convert and config builds the validation used.
    validated_with: dict[str, str] | None = None
    # Checks: the cell's fidelity to its source (judged against the thresholds of the night it ran), and the
    # cell's names in the matrix (not in the key: the history of a cell follows them).
    fidelity: Fidelity | None = None
    cell: dict[str, Name] | None = None
    # Checks: the names mlc_llm's JIT cache gives the library with these weights' config, per device string.
    jit_keys: dict[str, JitKey] | None = None
    # The build's signed in-toto statement of its outputs and of this record, made where it was built before
    # anything was uploaded (mlc_farm/trust/attestations.py); None in records from before attestations.
    attestation: dict[str, Any] | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


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


def referenced_blobs(record: BuildRecord) -> list[FileEntry]:
    return [*record.files, *([record.log] if record.log else [])]
