"""The build kinds, one record each: where a kind's builds are in the plan, where they run, what they are
given and what they are called. Every place that goes over all builds, names one, or sends one to a pool
reads this table, so a new kind is its model and planning in `plan.py`, its key in `keys.py`, its record type in
`records/schema.py`, its steps in `building/build.py` with their line in `building/runners.py`, and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

from mlc_farm.matrix.schema import DeviceSpec
from mlc_farm.planning.plan import CheckBuild, ConfigBuild, ConvertBuild, LibBuild, Plan, ReferenceBuild
from mlc_farm.records.schema import Kind

Build = Union[ConvertBuild, ConfigBuild, LibBuild, ReferenceBuild, CheckBuild]  # noqa: UP007 (a runtime alias)
WeightsBuild = Union[ConvertBuild, ConfigBuild, ReferenceBuild]  # noqa: UP007 (what the weights pool runs)
DeviceBuild = Union[LibBuild, CheckBuild]  # noqa: UP007 (what a device's pool runs)


@dataclass(frozen=True)
class BuildKind:
    """`runs_on`: "weights", the pool that reads sources (the build is given its model's fetched source), or
    "device", its device's pool (given the model builds it compiles or checks with). `shared`: one build
    serves several models, so its label alone does not tell two apart. `waits`: why a build that never
    started did not (only kinds that wait for others). `quick`: seconds each, so started first among equals.
    `compiles`: holds one of its pool's compile slots while it runs (farm mode)."""

    name: Kind
    builds: Callable[[Plan], Mapping[str, Build]]
    runs_on: Literal["weights", "device"]
    label: Callable[[Any], str]
    shared: bool = False
    waits: str = ""
    quick: bool = False
    compiles: bool = False


KINDS: tuple[BuildKind, ...] = (
    BuildKind("convert", lambda p: p.convert_builds, "weights", lambda b: f"convert {b.model}/{b.quantization}"),
    BuildKind(
        "config", lambda p: p.config_builds, "weights", lambda b: f"config {b.model}/{b.quantization}", quick=True
    ),
    BuildKind(
        "library",
        lambda p: p.lib_builds,
        "device",
        lambda b: f"library {b.device.name}/{b.quantization}",
        shared=True,
        compiles=True,
        waits="none of its models' convert and config builds succeeded",
    ),
    BuildKind("reference", lambda p: p.reference_builds, "weights", lambda b: f"reference {b.model}"),
    BuildKind(
        "check",
        lambda p: p.check_builds,
        "device",
        lambda b: f"check {b.model}/{b.quantization}/{b.device.name}",
        waits="one of its inputs failed",
    ),
)
BY_NAME: dict[str, BuildKind] = {k.name: k for k in KINDS}


def kind_of(build: Build) -> BuildKind:
    return BY_NAME[build.kind]


def all_builds(plan: Plan) -> dict[str, Build]:
    """Every build of the plan by key, kind by kind in the table's order."""
    return {key: b for kind in KINDS for key, b in kind.builds(plan).items()}


def by_kind(plan: Plan) -> dict[str, Mapping[str, Build]]:
    """The plan's builds of each kind, in the table's order (for counts and tables)."""
    return {kind.name: kind.builds(plan) for kind in KINDS}


def label(build: Build) -> str:
    """A short name for progress lines: `convert tiny-llama-a/q4f16_1`, `library cpu/q4f16_1 (3f2a...)`."""
    kind = kind_of(build)
    return f"{kind.label(build)} ({build.key[:12]})" if kind.shared else kind.label(build)


def on_device(build: Build) -> DeviceSpec | None:
    """The device whose pool runs the build (None: the weights pool, which reads the source)."""
    return build.device if isinstance(build, LibBuild | CheckBuild) else None


def reads(build: Build) -> str | None:
    """The model whose source the build reads (None: a device kind, which reads the store)."""
    return None if isinstance(build, LibBuild | CheckBuild) else build.model
