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
