"""The plan: cells expanded into weight builds (per model x quantization) and library builds (per
distinct architecture x quantization x overrides x target), each with its content key. Pure: the caller
brings the resolved sources and the toolchain identity.
"""

from __future__ import annotations

from pydantic import BaseModel

from mlc_farm import keys
from mlc_farm.matrix import Cell, DeviceSpec, Matrix, Overrides
from mlc_farm.sources import ResolvedSource
from mlc_farm.toolchain import ToolchainInfo


class WeightBuild(BaseModel):
    key: str
    model: str
    quantization: str
    conv_template: str
    overrides: Overrides
    model_type: str | None
    inputs: dict


class LibBuild(BaseModel):
    key: str
    quantization: str
    device: DeviceSpec
    overrides: Overrides
    # Weight builds whose mlc-chat-config.json can be compiled (any will do: same architecture), in order
    # of preference; the first one that is built is used, so one failed model does not sink the library.
    config_from: list[str]
    users: list[Cell]
    inputs: dict


class PlanCell(BaseModel):
    cell: Cell
    weights: str | None = None
    library: str | None = None
    problem: str | None = None


class Plan(BaseModel):
    toolchain: ToolchainInfo
    cells: list[PlanCell]
    weight_builds: dict[str, WeightBuild]
    lib_builds: dict[str, LibBuild]

    def units(self) -> dict[tuple[str, str], list[PlanCell]]:
        """Cells grouped by (model, quantization): one catalog entry, one published repo each."""
        out: dict[tuple[str, str], list[PlanCell]] = {}
        for pc in self.cells:
            out.setdefault((pc.cell.model, pc.cell.quantization), []).append(pc)
        return out


def make_plan(matrix: Matrix, cells: list[Cell], sources: dict[str, ResolvedSource], toolchain: ToolchainInfo) -> Plan:
    weight_builds: dict[str, WeightBuild] = {}
    lib_builds: dict[str, LibBuild] = {}
    planned: list[PlanCell] = []
    for cell in cells:
        spec, src = matrix.model(cell.model), sources[cell.model]
        if src.error or src.identity is None or src.config is None:
            planned.append(PlanCell(cell=cell, problem=src.error or "source not resolved"))
            continue
        model_type = spec.model_type or src.config.get("model_type")
        w_inputs = keys.weight_inputs(
            src.key_part(), cell.quantization, spec.conv_template, spec.overrides, spec.model_type, toolchain
        )
        w_key = keys.digest(w_inputs)
        weight_builds.setdefault(
            w_key,
            WeightBuild(
                key=w_key,
                model=cell.model,
                quantization=cell.quantization,
                conv_template=spec.conv_template,
                overrides=spec.overrides,
                model_type=spec.model_type,
                inputs=w_inputs,
            ),
        )
        arch = {"model_type": model_type, "config": keys.architecture(src.config)}
        device = matrix.device(cell.device)
        l_inputs = keys.library_inputs(arch, cell.quantization, spec.overrides, device, toolchain)
        l_key = keys.digest(l_inputs)
        lib = lib_builds.setdefault(
            l_key,
            LibBuild(
                key=l_key,
                quantization=cell.quantization,
                device=device,
                overrides=spec.overrides,
                config_from=[],
                users=[],
                inputs=l_inputs,
            ),
        )
        lib.users.append(cell)
        if w_key not in lib.config_from:
            lib.config_from.append(w_key)
        planned.append(PlanCell(cell=cell, weights=w_key, library=l_key))
    return Plan(toolchain=toolchain, cells=planned, weight_builds=weight_builds, lib_builds=lib_builds)
