"""Every kind's steps behind one call, so the task, the worker flows and an in-place engine each run any
build the same way: `run(store, build, given)`. A new kind adds its line to `_STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlc_farm.building import build
from mlc_farm.planning.kinds import Build
from mlc_farm.planning.plan import ModelBuilds
from mlc_farm.planning.sources import SourceFiles
from mlc_farm.records.schema import BuildRecord
from mlc_farm.store import ArtifactStore


@dataclass(frozen=True)
class Given:
    """What a build is given beside itself: its model's fetched source (a kind that runs on the weights
    pool), or the model builds a library compiles from (a device kind); how its log lines are shown, the
    flow run that builds it, and whether a record already there is built again."""

    files: SourceFiles | None = None
    builds: ModelBuilds | None = None
    convert_device: str = "cpu"
    on_line: Callable[[str], None] | None = None
    flow_run: str | None = None
    force: bool = False


def _source(b: Any, g: Given) -> SourceFiles:
    if g.files is None:
        raise ValueError(f"{b.kind} build {b.key[:12]} needs its source")  # a caller's mistake, never a user's
    return g.files


def _weights_of(b: Any, g: Given) -> ModelBuilds:
    if g.builds is None:
        raise ValueError(f"{b.kind} build {b.key[:12]} needs the model builds it compiles from")
    return g.builds


def _from_source(st: ArtifactStore, b: Any, g: Given) -> BuildRecord:
    return build.build_from_source(
        st, b, _source(b, g), g.convert_device, on_line=g.on_line, flow_run=g.flow_run, force=g.force
    )


_STEPS: dict[str, Callable[[ArtifactStore, Any, Given], BuildRecord]] = {
    "convert": _from_source,
    "config": _from_source,
    "library": lambda st, b, g: build.build_library(
        st, b, _weights_of(b, g), on_line=g.on_line, flow_run=g.flow_run, force=g.force
    ),
    "reference": lambda st, b, g: build.build_reference(st, b, _source(b, g), flow_run=g.flow_run, force=g.force),
    "check": lambda st, b, g: build.check_cell(st, b, on_line=g.on_line, flow_run=g.flow_run, force=g.force),
}


def run(store: ArtifactStore, b: Build, given: Given) -> BuildRecord:
    """Build `b` (or wait for the run that holds its lease) and return its record."""
    return _STEPS[b.kind](store, b, given)
