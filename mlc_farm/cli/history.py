"""`mlc-farm history`: a cell's speed, memory and fidelity, one point per toolchain, from the store's records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import StoreOpt
from mlc_farm.cli._output import out
from mlc_farm.errors import NotFound
from mlc_farm.formatting import size
from mlc_farm.matrix.schema import check_names
from mlc_farm.store import open_store

if TYPE_CHECKING:
    from mlc_farm.catalog.history import Point
    from mlc_farm.records.schema import BuildRecord


@command(app, "history")
def history_cmd(
    model: str,
    quantization: str,
    device: Annotated[str | None, typer.Argument(help="Only this device.")] = None,
    store: StoreOpt = None,
) -> None:
    """Print each device's series: decode tokens/s (median and range of the timed runs) and prefill tokens/s with
    the method that measured them (speeds compare only within one), peak memory, top-1 and KL against the source,
    one row per toolchain, with the newest toolchain's regressions."""
    from mlc_farm.catalog.history import series
    from mlc_farm.records.reads import all_records

    check_names(model=model, quantization=quantization, device=device)
    records = [r for _, r in all_records(open_store(store, must_exist=True))]
    found = {
        cell[2]: points
        for cell, points in series(records).items()
        if cell[:2] == (model, quantization) and device in (None, cell[2])
    }
    unrun = _unrun(records, model, quantization, device, set(found))
    for name, why in sorted(unrun.items()):
        out.print(Text(f"{model} {quantization} {name}: checked, but its library did not run ({why}): no speed, "
                       "memory or fidelity was measured"), soft_wrap=True)  # fmt: skip
    if not found and not unrun:
        raise NotFound(f"no checked build of {model} {quantization}{f' {device}' if device else ''} in the store")
    for name, points in sorted(found.items()):
        _print_series(f"{model} {quantization} {name}", points)


def _unrun(
    records: list[BuildRecord], model: str, quantization: str, device: str | None, found: set[str]
) -> dict[str, str]:
    """Devices whose check could not run the library (no such device where it was built): they measured
    nothing, and say so."""
    cells = [(r, r.cell) for r in records if r.kind == "check" and r.cell and r.validation]
    return {
        cell["device"]: r.validation.run.detail or r.validation.run.status
        for r, cell in cells
        if r.validation and r.validation.run.status != "passed" and (cell["model"], cell["quantization"]) == (model, quantization)
        and device in (None, cell["device"]) and cell["device"] not in found
    }  # fmt: skip


COLUMNS = ("toolchain", "checked", "method", "decode tok/s", "range", "prefill tok/s", "peak memory", "top-1", "KL")


def _values(p: Point, method: int) -> tuple[str, ...]:
    """One point's values, in COLUMNS' order."""
    runs = f"{min(p.tokens_per_s_runs):.1f}-{max(p.tokens_per_s_runs):.1f}" if p.tokens_per_s_runs else "-"
    return (
        p.toolchain, p.at.isoformat(timespec="seconds"), str(method),
        f"{p.tokens_per_s:.1f}" if p.tokens_per_s else "-", runs,
        f"{p.prefill_tokens_per_s:.1f}" if p.prefill_tokens_per_s else "-",
        size(p.peak_memory_bytes) if p.peak_memory_bytes else "-",
        f"{p.top1:.3f}" if p.top1 is not None else "not measured",
        f"{p.kl_mean:.4g}" if p.kl_mean is not None else "not measured",
    )  # fmt: skip


def _print_series(title: str, points: list[Point]) -> None:
    """A table; where it would not fit the terminal whole (80 columns), one block of lines per toolchain, every
    value whole. The methods and regressions wrap at words."""
    from mlc_farm.catalog.history import regressions, speed_rule
    from mlc_farm.settings import load_settings

    methods = list(dict.fromkeys(p.method or "not recorded" for p in points))
    rows = [_values(p, methods.index(p.method or "not recorded") + 1) for p in points]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    if sum(widths) + 3 * len(COLUMNS) + 1 <= out.width:  # the table whole: each cell, its padding and borders
        t = Table(title=title)
        for col in COLUMNS:
            t.add_column(col, no_wrap=True)
        for row in rows:
            t.add_row(Text(row[0]), *row[1:])
        out.print(t)
    else:
        out.print(Text(title, style="italic"))
        for row in rows:
            out.print(Text(f"{row[0]}, checked {row[1]}:", style="bold"))
            out.print(Text("  " + "; ".join(f"{c} {v}" for c, v in zip(COLUMNS[2:], row[2:], strict=True))))
    for i, method in enumerate(methods, 1):  # speeds compare only within one method: each is a series
        out.print(Text(f"method {i}: {method}"))
    floor = load_settings().speed_regression
    for r in regressions(points, floor):
        out.print(Text(f"regression: {r.describe()}", "yellow"))
    out.print(Text(f"a speed regression: {speed_rule(floor)}"))
