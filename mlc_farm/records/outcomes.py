"""What a run's steps hand each other and the run's report: how a build ended (`Outcome`, `Built`), what
happened to a catalog entry (`UnitResult`) and to a Hub repo (`PublishResult`). Low in the house so that the
run (building/), the tasks and the report share them without importing each other."""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel

from mlc_farm.records.schema import CatalogEntry

BY_ANOTHER_RUN: Literal["built by another run"] = (
    "built by another run"  # waited for: an overlapping run held the key's lease and built it
)
Status = Literal["built", "built by another run", "reused", "failed", "not run", "unresolved"]
DONE: tuple[Status, ...] = ("built", BY_ANOTHER_RUN, "reused")  # the build's record is in the store


class Built(BaseModel):
    """What a build returns to the run: its key, and whether another run built it while this one waited for
    the key's lease (embedded: the task's own record; farm: the record's flow run against the child run)."""

    key: str
    by_another_run: bool = False


class Outcome(BaseModel):
    """How one build of a run ended, as the run's summary shows it."""

    status: Status
    detail: str = ""
    log: str | None = None
    validation: str = ""


class UnitResult(BaseModel):
    """What happened to one catalog entry: moved to this run's builds, already there, or kept (and why)."""

    model: str
    quantization: str
    status: Literal["moved", "unchanged", "kept previous", "not built", "damaged"]
    detail: str = ""
    # Devices whose library is not in the entry for this model, and why (e.g. it does not fit these weights).
    unfit: dict[str, str] = {}
    # The entry as the store holds it, when this run read it and left it as it was: the page need not read it again.
    entry: CatalogEntry | None = None


class Operation(BaseModel):
    """One file a Hub commit adds or deletes."""

    op: Literal["add", "delete"]
    path: str
    size: int | None = None
    sha256: str | None = None


class PublishTarget(NamedTuple):
    """A model x quantization to publish, and where: its Hub repo and whether it is private (None: as it is)."""

    model: str
    quantization: str
    repo: str
    private: bool | None


class PublishResult(BaseModel):
    """What publishing one model x quantization did (or, dry, would do) to its Hub repo."""

    repo: str
    operations: list[Operation]
    unchanged: int
    commit: str | None = None
    dry_run: bool = False
    card: str = ""
    note: str = ""  # what a dry run could not compare
