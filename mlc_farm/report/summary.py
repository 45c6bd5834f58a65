"""The run summary: every cell with what happened to its convert, config and library builds, the library's
validation, and where the log is. Each step is counted on its own, so a summary never calls built weights
`reused`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from mlc_farm.planning.kinds import by_kind
from mlc_farm.planning.plan import Plan, PlanCell
from mlc_farm.records.outcomes import BY_ANOTHER_RUN, DONE, Outcome, Status, UnitResult
from mlc_farm.terminal import name_columns

STEPS = ("convert", "config", "library", "check")


COLOUR = {"built": "green", BY_ANOTHER_RUN: "cyan", "reused": "cyan", "failed": "red", "not run": "yellow",
          "unresolved": "red"}  # fmt: skip
MIN_COLUMN = 10  # the narrowest a status, validation or detail column reads well at


class CellRow(BaseModel):
    model: str
    quantization: str
    device: str
    convert: Status
    config: Status
    library: Status
    check: Status | None = None  # None: no check planned (no reference for fidelity)
    validation: str
    status: Literal["ok", "failed", "unresolved"]
    log: str
    detail: str


class Summary(BaseModel):
    rows: list[CellRow]
    steps: dict[str, dict[str, int]]
    units: list[UnitResult] = []
    regressions: list[str] = []  # against the previous toolchain (mlc_farm.catalog.history)

    @property
    def failed(self) -> list[CellRow]:
        return [r for r in self.rows if r.status != "ok"]

    def message(self) -> str:
        """One line: cells, then every step's own counts (`convert 4 built, config 4 reused, ...`)."""
        cells = {s: sum(r.status == s for r in self.rows) for s in ("ok", "failed", "unresolved")}
        head = f"{len(self.rows)} cells: " + ", ".join(f"{n} {s}" for s, n in cells.items() if n)
        steps = "; ".join(
            f"{step} " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            for step, counts in self.steps.items()
            if any(counts.values())
        )
        if unresolved := {r.model: r.detail for r in self.rows if r.status == "unresolved"}:
            head += " (" + "; ".join(f"{m}: {why}" for m, why in unresolved.items()) + ")"
        return f"{head}{f' ({steps})' if steps else ''}{self._catalog_note()}"

    def _catalog_note(self) -> str:
        """What the run did not move in the catalog, and why, after the counts."""
        kept = [u for u in self.units if u.status == "kept previous"]
        damaged = [f"{u.model} {u.quantization}" for u in self.units if u.status == "damaged"]
        tail = f"; {len(kept)} catalog entries kept at their previous builds" if kept else ""
        if self.regressions:
            tail += f"; {len(self.regressions)} regressions against the previous toolchain"
        if damaged:
            tail += f"; catalog entries damaged and left as they are: {', '.join(damaged)} (`mlc-farm verify`)"
        return tail

    def failures(self, limit: int = 10) -> str:
        """The failed cells, each with its reason and the command that prints its log (for the run's final state
        message, which `prefect deployment run --watch` and notifications show)."""
        lines = [
            f"{r.model} {r.quantization} {r.device}: {(r.detail or r.status).splitlines()[0][:200]} "
            f"(mlc-farm log {r.model} {r.quantization} {r.device})"
            for r in self.failed[:limit]
        ]
        if (more := len(self.failed) - limit) > 0:
            lines.append(f"and {more} more (the mlc-farm-build-summary artifact lists every cell)")
        return "; ".join(lines)

    def grid(self, rows: list[CellRow] | None = None) -> str:
        """Markdown picture of the matrix (or of `rows`): one row per model x quantization, one column per device."""
        rows = self.rows if rows is None else rows
        mark = {"ok": "🟢 ok", "failed": "🔴 failed", "unresolved": "🔴 unresolved"}
        devices = list(dict.fromkeys(r.device for r in self.rows))
        cells = {(r.model, r.quantization, r.device): r for r in rows}
        lines = ["| model | quantization | " + " | ".join(devices) + " |", "|---|---|" + "---|" * len(devices)]
        for model, quant in dict.fromkeys((r.model, r.quantization) for r in rows):
            row = [cells.get((model, quant, d)) for d in devices]
            shown = [f"{mark[r.status]} {r.validation}".strip() if r else "" for r in row]
            lines.append(f"| {model} | {quant} | " + " | ".join(shown) + " |")
        return "\n".join(lines)

    def for_console(self, limit: int = 40) -> list[CellRow]:
        """Every cell of a small matrix; only the cells that are not OK of a larger one (the artifact has all)."""
        return self.rows if len(self.rows) <= limit else self.failed

    def table(self, rows: list[CellRow] | None = None, width: int | None = None) -> RenderableType:
        """The cells (all, or `rows`) as a table that wraps to the console's `width`; where that leaves the other
        columns too narrow to read beside whole names (an 80-column terminal, long model ids), one block of lines
        per cell instead. The log links are printed below it in full, never cut."""
        shown = self.rows if rows is None else rows
        steps = STEPS if any(r.check for r in shown) else STEPS[:-1]  # no empty column: no check was planned
        names = {
            "model": [r.model for r in shown],
            "quant": [r.quantization for r in shown],
            "device": [r.device for r in shown],
        }
        named = sum(max([len(k), *map(len, v)]) + 3 for k, v in names.items())
        if width is not None and width - named < MIN_COLUMN * (len(steps) + 2):
            return Group(Text("mlc-farm build summary", style="italic"), *(self._block(r, steps) for r in shown))
        t = Table(title="mlc-farm build summary")
        name_columns(t, names)
        for col in (*steps, "validation", "detail"):
            t.add_column(col, overflow="fold")
        for r in shown:
            statuses = (r.convert, r.config, r.library, r.check)[: len(steps)]
            t.add_row(
                Text(r.model),
                Text(r.quantization),
                Text(r.device),
                *(Text(s, COLOUR[s]) if s else Text("-") for s in statuses),
                Text(r.validation),
                Text(r.detail),
            )
        return t

    @staticmethod
    def _block(r: CellRow, steps: tuple[str, ...]) -> Text:
        statuses = (r.convert, r.config, r.library, r.check)[: len(steps)]
        line = Text.assemble((f"{r.model} {r.quantization} {r.device}", "bold"), ": ")
        for i, (step, status) in enumerate(zip(steps, statuses, strict=True)):
            line.append(f"{', ' if i else ''}{step} ")
            line.append(status or "-", COLOUR.get(status or "", ""))
        for extra in (r.validation, r.detail):
            if extra:
                line.append(f"\n  {extra}")
        return line


def _unresolved(pc: PlanCell) -> CellRow:
    return CellRow(
        **pc.cell.model_dump(), convert="unresolved", config="unresolved", library="not run", validation="",
        status="unresolved", log="", detail=pc.problem or "",
    )  # fmt: skip


def _cell_row(pc: PlanCell, outcomes: dict[str, Outcome], unfit: str) -> CellRow:
    """One cell's row from its builds' outcomes: the first that failed or did not run says why; `unfit`: why its
    library is not in the catalog entry, when it is not."""
    assert pc.convert and pc.config and pc.library
    convert, config, lib = outcomes[pc.convert], outcomes[pc.config], outcomes[pc.library]
    check = outcomes.get(pc.check) if pc.check else None
    steps = [convert, config, lib, *([check] if check else [])]
    bad = next((o for o in steps if o.status in ("failed", "not run")), None)
    detail = (bad.detail or bad.status).splitlines()[0] if bad else unfit
    shown = check.validation if check and check.validation else lib.validation
    if not pc.check and pc.no_fidelity:
        shown += f"; fidelity not measured: {pc.no_fidelity}"
    done = all(o.status in DONE for o in steps)
    return CellRow(
        **pc.cell.model_dump(), convert=convert.status, config=config.status, library=lib.status,
        check=check.status if check else None, validation=shown, status="ok" if done and not detail else "failed",
        log=(bad or lib).log or "", detail=detail,
    )  # fmt: skip


def summarize(plan: Plan, outcomes: dict[str, Outcome], units: list[UnitResult] | None = None) -> Summary:
    unfit = {(u.model, u.quantization, d): why for u in units or [] for d, why in u.unfit.items()}
    rows = [
        _unresolved(pc)
        if pc.problem or pc.convert is None or pc.config is None or pc.library is None
        else _cell_row(pc, outcomes, unfit.get((pc.cell.model, pc.cell.quantization, pc.cell.device), ""))
        for pc in plan.cells
    ]
    counts = {
        step: {
            s: sum(outcomes[k].status == s for k in keys if k in outcomes)
            for s in ("built", BY_ANOTHER_RUN, "reused", "failed", "not run")
        }
        for step, keys in by_kind(plan).items()
    }
    return Summary(rows=rows, steps=counts, units=units or [])
