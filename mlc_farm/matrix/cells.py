"""A matrix's cells: every model x quantization x device, less the excluded, plus the included, and the
cells a command's --model/--quantization/--device selects.
"""

from __future__ import annotations

from collections.abc import Callable

from mlc_farm.errors import SelectionError
from mlc_farm.matrix.schema import QUANTIZATIONS, Cell, Matrix, Rule, hint
from mlc_farm.names import shorten


def _base_cells(m: Matrix) -> list[Cell]:
    all_devices = [d.name for d in m.devices]
    return [
        Cell(model=model.id, quantization=q, device=d)
        for model in m.models
        for q in (model.quantizations or m.quantizations)
        for d in (model.devices or all_devices)
    ]


def _included_cells(m: Matrix, rule: Rule) -> list[Cell]:
    return [
        Cell(model=model.id, quantization=q, device=d.name)
        for model in m.models
        for q in QUANTIZATIONS
        for d in m.devices
        if rule.matches(model.id, q, d.name) and (rule.quantization or q in m.quantizations)
    ]


def unmatched_rules(m: Matrix) -> list[str]:
    """A rule that selects no cell is almost always a typo: say so instead of building something else."""
    base = _base_cells(m)
    problems = [
        f"exclude[{i}]: matches no cell of the matrix ({r.model_dump(exclude_none=True)})"
        for i, r in enumerate(m.exclude)
        if not any(r.matches(c.model, c.quantization, c.device) for c in base)
    ]
    problems += [
        f"include[{i}]: matches no model/quantization/device combination ({r.model_dump(exclude_none=True)})"
        for i, r in enumerate(m.include)
        if not _included_cells(m, r)
    ]
    return problems


def expand(m: Matrix) -> list[Cell]:
    """Cells to build: each model x its quantizations x its devices, minus `exclude`, plus `include`.

    As in a CI matrix, `exclude` applies to the product and `include` adds cells back afterwards.
    """
    cells = [c for c in _base_cells(m) if not any(r.matches(c.model, c.quantization, c.device) for r in m.exclude)]
    for rule in m.include:
        cells += [c for c in _included_cells(m, rule) if c not in cells]
    return cells


def select_cells(
    m: Matrix,
    file: str,
    models: list[str] | None = None,
    quantizations: list[str] | None = None,
    devices: list[str] | None = None,
) -> list[Cell]:
    """The cells of the named models, quantizations and devices (all when None); an unknown name is an
    error, not an empty build."""
    cells = expand(m)
    problems, lines = [], []
    choices: list[tuple[str, list[str] | None, list[str], Callable[[Cell], str]]] = [
        ("--model", models, [x.id for x in m.models], lambda c: c.model),
        ("--quantization", quantizations, sorted({c.quantization for c in cells}), lambda c: c.quantization),
        ("--device", devices, [d.name for d in m.devices], lambda c: c.device),
    ]
    for flag, wanted, known, pick in choices:
        if not wanted:
            continue
        for x in wanted:
            if x not in known:
                problems.append(f"{flag}: unknown {flag[2:]} {shorten(x)}{hint(x, known)}")
                lines.append(f"no {flag[2:]} {shorten(x)} in {file}{hint(x, known)}")
        cells = [c for c in cells if pick(c) in wanted]
    if problems:
        raise SelectionError(file, problems, lines)
    return cells
