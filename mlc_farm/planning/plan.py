"""The plan: cells expanded into convert builds (per source x quantization), config builds (per model x
quantization x conv template x options), library builds (per distinct architecture x quantization x
overrides x target x host, under the toolchain of the device's pool), fidelity references (per source x evaluation set x method) and cell checks (per
library x weights x reference: the cell's run and fidelity on its device), each with its content key. Pure:
the caller brings the resolved sources and the toolchain identity.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel

from mlc_farm.digests import digest
from mlc_farm.matrix import fidelity_rules
from mlc_farm.matrix.schema import Cell, DeviceSpec, Matrix, ModelSpec, Overrides
from mlc_farm.planning import keys, twins
from mlc_farm.planning.fingerprints import Fingerprint
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.toolchain import capabilities
from mlc_farm.toolchain.info import ToolchainInfo, identity, of_pool


class ConvertBuild(BaseModel):
    """convert_weight: hours on a large model, so it depends on as little as possible."""

    kind: Literal["convert"] = "convert"
    key: str
    model: str
    quantization: str
    model_type: str | None
    inputs: dict[str, Any]
    toolchain: dict[str, str] = {}  # the toolchain that runs it (its key may hold a fingerprint instead)
    identity_note: str = ""  # why the key holds the fingerprint or the version


class ConfigBuild(BaseModel):
    """gen_config: mlc-chat-config.json and the tokenizer files, seconds to rebuild."""

    kind: Literal["config"] = "config"
    key: str
    model: str
    quantization: str
    conv_template: str
    overrides: Overrides
    model_type: str | None
    inputs: dict[str, Any]


class ModelBuilds(BaseModel):
    """The convert and config builds of one model x quantization: what a library compiles and is proven with."""

    model: str
    convert: str
    config: str


class LibBuild(BaseModel):
    kind: Literal["library"] = "library"
    key: str
    quantization: str
    device: DeviceSpec
    overrides: Overrides
    # The models this library serves, in order of preference: it compiles the config of the first whose convert
    # and config builds are ready, so one failed model does not sink the library.
    sources: list[ModelBuilds]
    users: list[Cell]
    inputs: dict[str, Any]


class ReferenceBuild(BaseModel):
    """Reference next-token distributions of a source, from transformers in float32: on the weights pool (it
    reads the source), once per source and evaluation set, for every quantization, device and nightly."""

    kind: Literal["reference"] = "reference"
    key: str
    model: str
    positions: int
    tools: str  # the torch and transformers the probe found (not in the key: any float32 pass will do)
    inputs: dict[str, Any]


class CheckBuild(BaseModel):
    """One cell's check on its device: a run with its weights (median tokens/s) and the teacher-forced pass of
    fidelity against `reference` (a ReferenceBuild, or the check whose library pass is the reference), or,
    `role` "reference", the pass that is the reference of its source on this device."""

    kind: Literal["check"] = "check"
    key: str
    model: str
    quantization: str
    device: DeviceSpec
    library: str
    builds: ModelBuilds
    reference: str | None
    role: Literal["measured", "reference"]
    positions: int
    thresholds: fidelity_rules.Thresholds
    inputs: dict[str, Any]

    def depends_on(self) -> list[str]:
        return [self.library, self.builds.convert, self.builds.config, *([self.reference] if self.reference else [])]


class PlanCell(BaseModel):
    cell: Cell
    convert: str | None = None
    config: str | None = None
    library: str | None = None
    check: str | None = None
    problem: str | None = None
    no_fidelity: str | None = None  # why the cell's fidelity cannot be measured


class Plan(BaseModel):
    toolchain: ToolchainInfo
    cells: list[PlanCell]
    convert_builds: dict[str, ConvertBuild]
    config_builds: dict[str, ConfigBuild]
    lib_builds: dict[str, LibBuild]
    reference_builds: dict[str, ReferenceBuild] = {}
    check_builds: dict[str, CheckBuild] = {}

    @functools.cached_property
    def units(self) -> dict[tuple[str, str], list[PlanCell]]:
        """Cells grouped by (model, quantization): one catalog entry, one published repo each (computed once)."""
        out: dict[tuple[str, str], list[PlanCell]] = {}
        for pc in self.cells:
            out.setdefault((pc.cell.model, pc.cell.quantization), []).append(pc)
        return out


def conversion_classes(
    matrix: Matrix, cells: list[Cell], sources: dict[str, ResolvedSource]
) -> dict[str, dict[str, Any]]:
    """Every distinct conversion class of the cells that have a twin (mlc_farm.planning.twins), by class key."""
    out = {}
    for cell in cells:
        src, spec = sources[cell.model], matrix.model(cell.model)
        if src.config is None or matrix.convert_identity != "fingerprint":
            continue
        config = {**src.config, **({"model_type": spec.model_type} if spec.model_type else {})}
        if (cls := twins.conversion_class(config, cell.quantization)) is not None:
            out[twins.class_key(cls)] = cls
    return out


def _identity(
    matrix: Matrix, spec_type: str | None, src: ResolvedSource, quantization: str, found: dict[str, Fingerprint]
) -> tuple[str | None, str]:
    """The fingerprint a convert key holds (None: the toolchain version), and why."""
    if matrix.convert_identity == "toolchain":
        return None, "keyed by the toolchain version (convert_identity: toolchain)"
    config = {**(src.config or {}), **({"model_type": spec_type} if spec_type else {})}
    cls = twins.conversion_class(config, quantization)
    if cls is None:
        if config.get("model_type") in twins.TWIN_TYPES:
            return (
                None,
                f"keyed by the toolchain version: its twin would hold over {twins.TWIN_MAX_PARAMETERS} parameters",
            )
        return None, f"keyed by the toolchain version: no twin for model type {config.get('model_type')!r}"
    fp = found.get(twins.class_key(cls))
    if fp is None:
        return None, "keyed by the toolchain version: no conversion fingerprint for this toolchain"
    if fp.fingerprint is None:
        return None, f"keyed by the toolchain version: {fp.error}"
    return fp.fingerprint, f"conversion fingerprint {fp.fingerprint[:12]}"


def make_plan(
    matrix: Matrix,
    cells: list[Cell],
    sources: dict[str, ResolvedSource],
    toolchain: ToolchainInfo,
    fingerprints: dict[str, Fingerprint] | None = None,
) -> Plan:
    """`fingerprints`: the toolchain's conversion fingerprints by class key (without: version keys)."""
    converts: dict[str, ConvertBuild] = {}
    configs: dict[str, ConfigBuild] = {}
    libs: dict[str, LibBuild] = {}
    planned: list[PlanCell] = []
    specs, devices = {m.id: m for m in matrix.models}, {d.name: d for d in matrix.devices}
    sourced: set[tuple[str, str, str, str]] = set()  # (library, model, convert, config) already in its sources
    for cell in cells:
        spec, src = specs[cell.model], sources[cell.model]
        if problem := _cell_problem(cell, spec, src, toolchain):
            planned.append(PlanCell(cell=cell, problem=problem))
            continue
        convert, config = _weights(matrix, cell, spec, src, toolchain, fingerprints or {})
        converts.setdefault(convert.key, convert)
        configs.setdefault(config.key, config)
        made = _library(cell, spec, src, devices[cell.device], toolchain)
        lib = libs.setdefault(made.key, made)
        lib.users.append(cell)
        if (lib.key, cell.model, convert.key, config.key) not in sourced:
            sourced.add((lib.key, cell.model, convert.key, config.key))
            lib.sources.append(ModelBuilds(model=cell.model, convert=convert.key, config=config.key))
        planned.append(PlanCell(cell=cell, convert=convert.key, config=config.key, library=lib.key))
    references, checks = _checks(matrix, planned, sources, toolchain)
    return Plan(toolchain=toolchain, cells=planned, convert_builds=converts, config_builds=configs, lib_builds=libs,
                reference_builds=references, check_builds=checks)  # fmt: skip


def _model_type(spec: ModelSpec, src: ResolvedSource) -> Any:
    return spec.model_type or (src.config or {}).get("model_type")


def _cell_problem(cell: Cell, spec: ModelSpec, src: ResolvedSource, toolchain: ToolchainInfo) -> str | None:
    """Why a cell cannot be planned: its source did not resolve, or the toolchain knows not its model type."""
    if src.error or src.identity is None or src.config is None:
        return src.error or "source not resolved"
    accepted, model_type = toolchain.names, _model_type(spec, src)
    if accepted and accepted.model_types is not None and model_type not in accepted.model_types:
        return f"model type {model_type!r} (config.json of {cell.model}) is not one the toolchain knows"
    return None


def _weights(
    matrix: Matrix,
    cell: Cell,
    spec: ModelSpec,
    src: ResolvedSource,
    toolchain: ToolchainInfo,
    fingerprints: dict[str, Fingerprint],
) -> tuple[ConvertBuild, ConfigBuild]:
    """The cell's convert and config builds, keyed by what each reads."""
    fingerprint, note = _identity(matrix, spec.model_type, src, cell.quantization, fingerprints)
    c_inputs = keys.convert_inputs(src.key_part(), cell.quantization, spec.model_type, toolchain, fingerprint)
    convert = ConvertBuild(key=digest(c_inputs), model=cell.model, quantization=cell.quantization,
                           model_type=spec.model_type, inputs=c_inputs, toolchain=identity(toolchain),
                           identity_note=note)  # fmt: skip
    g_inputs = keys.config_inputs(
        src.key_part(), cell.quantization, spec.conv_template, spec.overrides, spec.model_type, toolchain
    )
    config = ConfigBuild(key=digest(g_inputs), model=cell.model, quantization=cell.quantization,
                         conv_template=spec.conv_template, overrides=spec.overrides, model_type=spec.model_type,
                         inputs=g_inputs)  # fmt: skip
    return convert, config


def _library(
    cell: Cell, spec: ModelSpec, src: ResolvedSource, device: DeviceSpec, toolchain: ToolchainInfo
) -> LibBuild:
    """The cell's library build, keyed by the architecture (shared by the models of one), not the model."""
    arch = {"model_type": _model_type(spec, src), "config": keys.architecture(src.config or {})}
    tools = capabilities.tools(device, toolchain.can_build(device.work_pool))
    inputs = keys.library_inputs(arch, cell.quantization, spec.overrides, device, of_pool(toolchain, device.work_pool),
                                 tools)  # fmt: skip
    return LibBuild(key=digest(inputs), quantization=cell.quantization, device=device, overrides=spec.overrides,
                    sources=[], users=[], inputs=inputs)  # fmt: skip


NO_REFERENCE = (
    "no reference: torch and transformers are not importable beside the toolchain, and the matrix has no "
    f"{'/'.join(fidelity_rules.REFERENCE_QUANTIZATIONS)} build of this model on this device"
)


def _checks(
    matrix: Matrix, planned: list[PlanCell], sources: dict[str, ResolvedSource], toolchain: ToolchainInfo
) -> tuple[dict[str, ReferenceBuild], dict[str, CheckBuild]]:
    """Each cell's check, and the reference it is measured against: transformers where the toolchain's
    interpreter has it, else the highest-precision build of the same model on the same device, else none."""
    references: dict[str, ReferenceBuild] = {}
    checks: dict[str, CheckBuild] = {}
    built = [pc for pc in planned if pc.library]
    by_cell = {(pc.cell.model, pc.cell.quantization, pc.cell.device): pc for pc in built}

    def check(pc: PlanCell, reference: str | None, role: Literal["measured", "reference"]) -> str:
        spec, c = matrix.model(pc.cell.model), pc.cell
        n = fidelity_rules.positions(matrix.fidelity, spec.fidelity)
        builds = ModelBuilds(model=c.model, convert=pc.convert or "", config=pc.config or "")
        inputs = keys.check_inputs(pc.library or "", builds.convert, builds.config, reference, role, fidelity_rules.EVAL_SET,
                                   n, fidelity_rules.TOP_K, of_pool(toolchain, matrix.device(c.device).work_pool))  # fmt: skip
        key = digest(inputs)
        checks[key] = CheckBuild(
            key=key, model=c.model, quantization=c.quantization, device=matrix.device(c.device),
            library=pc.library or "", builds=builds, reference=reference, role=role, positions=n,
            thresholds=fidelity_rules.thresholds(c.quantization, matrix.fidelity, spec.fidelity), inputs=inputs,
        )  # fmt: skip
        pc.check = key
        return key

    def stand_in(pc: PlanCell) -> PlanCell | None:
        c = pc.cell
        return next(
            (by_cell[k] for q in fidelity_rules.REFERENCE_QUANTIZATIONS if (k := (c.model, q, c.device)) in by_cell),
            None,
        )

    order = {q: i for i, q in enumerate(fidelity_rules.REFERENCE_QUANTIZATIONS)}
    for pc in sorted(built, key=lambda pc: order.get(pc.cell.quantization, len(order))):  # references first
        if toolchain.reference:
            spec = matrix.model(pc.cell.model)
            n = fidelity_rules.positions(matrix.fidelity, spec.fidelity)
            inputs = keys.reference_inputs(sources[pc.cell.model].key_part(), fidelity_rules.EVAL_SET, n,
                                           fidelity_rules.METHOD_TRANSFORMERS, fidelity_rules.TOP_K)  # fmt: skip
            ref = references.setdefault(
                digest(inputs),
                ReferenceBuild(
                    key=digest(inputs), model=pc.cell.model, positions=n, tools=toolchain.reference, inputs=inputs
                ),
            )
            check(pc, ref.key, "measured")
        elif (best := stand_in(pc)) is None:
            pc.no_fidelity = NO_REFERENCE
        elif best is pc:
            check(pc, None, "reference")
        else:
            assert best.check is not None  # reference cells are planned first
            check(pc, best.check, "measured")
    return references, checks
