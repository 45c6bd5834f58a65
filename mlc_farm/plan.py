"""The plan: cells expanded into convert builds (per source x quantization), config builds (per model x
quantization x conv template x options) and library builds (per distinct architecture x quantization x
overrides x target x host), each with its content key. Pure: the caller brings the resolved sources and
the toolchain identity.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel

from mlc_farm import keys
from mlc_farm.matrix import Cell, DeviceSpec, Matrix, Overrides
from mlc_farm.sources import ResolvedSource
from mlc_farm.toolchain import ToolchainInfo


class ConvertBuild(BaseModel):
    """convert_weight: hours on a large model, so it depends on as little as possible."""

    kind: Literal["convert"] = "convert"
    key: str
    model: str
    quantization: str
    model_type: str | None
    inputs: dict


class ConfigBuild(BaseModel):
    """gen_config: mlc-chat-config.json and the tokenizer files, seconds to rebuild."""

    kind: Literal["config"] = "config"
    key: str
    model: str
    quantization: str
    conv_template: str
    overrides: Overrides
    model_type: str | None
    inputs: dict


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
    inputs: dict


class PlanCell(BaseModel):
    cell: Cell
    convert: str | None = None
    config: str | None = None
    library: str | None = None
    problem: str | None = None


class Plan(BaseModel):
    toolchain: ToolchainInfo
    cells: list[PlanCell]
    convert_builds: dict[str, ConvertBuild]
    config_builds: dict[str, ConfigBuild]
    lib_builds: dict[str, LibBuild]

    @functools.cached_property
    def units(self) -> dict[tuple[str, str], list[PlanCell]]:
        """Cells grouped by (model, quantization): one catalog entry, one published repo each (computed once)."""
        out: dict[tuple[str, str], list[PlanCell]] = {}
        for pc in self.cells:
            out.setdefault((pc.cell.model, pc.cell.quantization), []).append(pc)
        return out

    def all_keys(self) -> list[str]:
        return [*self.convert_builds, *self.config_builds, *self.lib_builds]


def make_plan(matrix: Matrix, cells: list[Cell], sources: dict[str, ResolvedSource], toolchain: ToolchainInfo) -> Plan:
    converts: dict[str, ConvertBuild] = {}
    configs: dict[str, ConfigBuild] = {}
    libs: dict[str, LibBuild] = {}
    planned: list[PlanCell] = []
    accepted = toolchain.names
    specs, devices = {m.id: m for m in matrix.models}, {d.name: d for d in matrix.devices}
    sourced: set[tuple[str, str, str, str]] = set()  # (library, model, convert, config) already in its sources
    for cell in cells:
        spec, src = specs[cell.model], sources[cell.model]
        if src.error or src.identity is None or src.config is None:
            planned.append(PlanCell(cell=cell, problem=src.error or "source not resolved"))
            continue
        model_type = spec.model_type or src.config.get("model_type")
        if accepted and accepted.model_types is not None and model_type not in accepted.model_types:
            problem = f"model type {model_type!r} (config.json of {cell.model}) is not one the toolchain knows"
            planned.append(PlanCell(cell=cell, problem=problem))
            continue
        c_inputs = keys.convert_inputs(src.key_part(), cell.quantization, spec.model_type, toolchain)
        c_key = keys.digest(c_inputs)
        converts.setdefault(
            c_key,
            ConvertBuild(
                key=c_key, model=cell.model, quantization=cell.quantization, model_type=spec.model_type, inputs=c_inputs
            ),
        )
        g_inputs = keys.config_inputs(
            src.key_part(), cell.quantization, spec.conv_template, spec.overrides, spec.model_type, toolchain
        )
        g_key = keys.digest(g_inputs)
        configs.setdefault(
            g_key,
            ConfigBuild(
                key=g_key,
                model=cell.model,
                quantization=cell.quantization,
                conv_template=spec.conv_template,
                overrides=spec.overrides,
                model_type=spec.model_type,
                inputs=g_inputs,
            ),
        )
        arch = {"model_type": model_type, "config": keys.architecture(src.config)}
        device = devices[cell.device]
        l_inputs = keys.library_inputs(arch, cell.quantization, spec.overrides, device, toolchain)
        l_key = keys.digest(l_inputs)
        lib = libs.setdefault(
            l_key,
            LibBuild(
                key=l_key,
                quantization=cell.quantization,
                device=device,
                overrides=spec.overrides,
                sources=[],
                users=[],
                inputs=l_inputs,
            ),
        )
        lib.users.append(cell)
        builds = ModelBuilds(model=cell.model, convert=c_key, config=g_key)
        if (l_key, cell.model, c_key, g_key) not in sourced:
            sourced.add((l_key, cell.model, c_key, g_key))
            lib.sources.append(builds)
        planned.append(PlanCell(cell=cell, convert=c_key, config=g_key, library=l_key))
    return Plan(toolchain=toolchain, cells=planned, convert_builds=converts, config_builds=configs, lib_builds=libs)
