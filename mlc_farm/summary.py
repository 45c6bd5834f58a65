"""The run summary: every cell with what happened to its weights and its library, and where the log is."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from rich.table import Table

from mlc_farm.plan import Plan

Status = Literal["built", "reused", "failed", "skipped", "unresolved"]


class Outcome(BaseModel):
    status: Status
    detail: str = ""
    log: str | None = None


class CellRow(BaseModel):
    model: str
    quantization: str
    device: str
    weights: Status
    library: Status
    log: str
    detail: str


class Summary(BaseModel):
    rows: list[CellRow]
    toolchain_runs: dict[str, int]

    @property
    def failed(self) -> list[CellRow]:
        return [r for r in self.rows if "failed" in (r.weights, r.library) or r.weights == "unresolved"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            status = r.library if r.weights in ("built", "reused") else r.weights
            out[status] = out.get(status, 0) + 1
        return out

    def grid(self) -> str:
        """Markdown picture of the matrix: one row per model x quantization, one column per device."""
        mark = {"built": "🟢 built", "reused": "🔵 reused", "failed": "🔴 failed", "skipped": "🟡 skipped",
                "unresolved": "🔴 unresolved"}  # fmt: skip
        devices = list(dict.fromkeys(r.device for r in self.rows))
        cells = {(r.model, r.quantization, r.device): r for r in self.rows}
        lines = ["| model | quantization | " + " | ".join(devices) + " |", "|---|---|" + "---|" * len(devices)]
        for model, quant in dict.fromkeys((r.model, r.quantization) for r in self.rows):
            row = [cells.get((model, quant, d)) for d in devices]
            shown = [mark[_status(r)] if r else "" for r in row]
            lines.append(f"| {model} | {quant} | " + " | ".join(shown) + " |")
        return "\n".join(lines)

    def table(self) -> Table:
        colour = {"built": "green", "reused": "cyan", "failed": "red", "skipped": "yellow", "unresolved": "red"}
        t = Table(title="mlc-farm build summary")
        for col in ("model", "quant", "device", "weights", "library", "log / detail"):
            t.add_column(col)
        for r in self.rows:
            t.add_row(
                r.model, r.quantization, r.device,
                f"[{colour[r.weights]}]{r.weights}[/]", f"[{colour[r.library]}]{r.library}[/]",
                r.detail or r.log,
            )  # fmt: skip
        return t


def _status(row: CellRow) -> Status:
    """One word for a cell: a failure anywhere wins, then an unresolved source, then the library's fate."""
    if "failed" in (row.weights, row.library):
        return "failed"
    return "unresolved" if row.weights == "unresolved" else row.library


def summarize(plan: Plan, outcomes: dict[str, Outcome]) -> Summary:
    rows = []
    for pc in plan.cells:
        c = pc.cell
        if pc.problem or pc.weights is None or pc.library is None:
            rows.append(
                CellRow(**c.model_dump(), weights="unresolved", library="skipped", log="", detail=pc.problem or "")
            )
            continue
        w, lib = outcomes[pc.weights], outcomes[pc.library]
        bad = next((o for o in (w, lib) if o.status == "failed"), None)
        rows.append(
            CellRow(
                **c.model_dump(),
                weights=w.status,
                library=lib.status,
                log=(bad or lib).log or "",
                detail=bad.detail.splitlines()[0] if bad else "",
            )
        )
    runs = {
        "weight_builds": sum(outcomes[k].status == "built" for k in plan.weight_builds),
        "library_builds": sum(outcomes[k].status == "built" for k in plan.lib_builds),
    }
    return Summary(rows=rows, toolchain_runs=runs)
