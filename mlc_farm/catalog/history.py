"""Speed, memory and fidelity across nightlies, from the check records already in the store (no database of
its own): one point per toolchain, per catalog cell and per library (architecture x quantization x target),
and the regressions of the newest toolchain against the one before. Pure, given the records.

Timing is noisy: a point keeps every timed run's tokens/s, and a drop counts only when it is more than
MLC_FARM_SPEED_REGRESSION (10%) of the old figure and the new runs are all below the old ones (the two ranges
do not overlap): a shared machine's 2% is not a regression. Speeds compare only within one method (`speed.py`): a
change of method starts a new series instead of flagging a regression. KL counts when it is far worse (`fidelity.judge`'s rule);
peak memory when it grew by more than a tenth.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from mlc_farm.checks.speed import of_phase
from mlc_farm.matrix.fidelity_rules import kl_regressed
from mlc_farm.planning.keys import across_toolchains
from mlc_farm.records.schema import BuildRecord, CheckRecord

MEMORY_GROWTH = 1.10


class Point(BaseModel):
    toolchain: str
    at: datetime
    tokens_per_s: float | None = None  # decode through the VM, as `method` measured it
    tokens_per_s_runs: list[float] = []
    method: str | None = None
    prefill_tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    top1: float | None = None
    kl_mean: float | None = None
    check: str


class Regression(BaseModel):
    what: str  # "tokens/s", "KL", "memory"
    before: float
    after: float
    floor: float = 0.0  # tokens/s: the relative drop it had to pass (MLC_FARM_SPEED_REGRESSION)

    def describe(self) -> str:
        if self.what == "tokens/s":
            drop = 1 - self.after / self.before if self.before else 0
            return (
                f"tokens/s down: {self.before:.1f} -> {self.after:.1f} ({drop:.0%}: beyond "
                f"{self.floor:.0%} and the spread of the timed runs)"
            )
        if self.what == "KL":
            return f"KL up: {self.before:.4g} -> {self.after:.4g}"
        return f"peak memory up: {self.before / 2**20:.0f} MB -> {self.after / 2**20:.0f} MB"


def toolchain_name(toolchain: dict[str, Any]) -> str:
    commit = str(toolchain.get("mlc_llm_commit", ""))[:12]
    return f"mlc_llm {toolchain.get('mlc_llm_version', 'unknown')}" + (f" ({commit})" if commit else "")


def point(record: CheckRecord) -> Point:
    run = record.validation.run if record.validation else None
    measured = record.fidelity.measured if record.fidelity else None
    return Point(
        toolchain=toolchain_name(record.toolchain),
        at=record.finished_at,
        check=record.key,
        tokens_per_s=run.tokens_per_s if run else None,
        tokens_per_s_runs=(run.tokens_per_s_runs or []) if run else [],
        method=run.method if run else None,
        prefill_tokens_per_s=(prefill.tokens_per_s if run and (prefill := of_phase(run.speeds, "prefill")) else None),
        peak_memory_bytes=run.peak_memory_bytes if run else None,
        top1=measured.top1 if measured else None,
        kl_mean=measured.kl_mean if measured else None,
    )


def series(records: list[BuildRecord], by: str = "cell") -> dict[tuple[str, ...], list[Point]]:
    """The points of every cell (`by="cell"`: model, quantization, device) or library (`by="library"`: its
    inputs without the toolchain, and a label), oldest first; the newest check per toolchain."""
    libraries = {r.key: r for r in records if r.kind == "library"}
    grouped: dict[tuple[str, ...], dict[str, Point]] = {}
    for r in records:
        if r.kind != "check" or r.cell is None or r.validation is None or r.validation.run.status != "passed":
            continue
        if by == "cell":
            name: tuple[str, ...] = (r.cell["model"], r.cell["quantization"], r.cell["device"])
        elif (lib := libraries.get(r.inputs.get("library", ""))) is not None:
            name = (across_toolchains(lib.inputs), library_label(lib))
        else:
            continue
        p = point(r)
        points = grouped.setdefault(name, {})
        if p.toolchain not in points or points[p.toolchain].at < p.at:
            points[p.toolchain] = p
    return {k: sorted(v.values(), key=lambda p: p.at) for k, v in grouped.items()}


def library_label(lib: BuildRecord) -> str:
    model = lib.inputs.get("model", {})
    return f"{model.get('model_type', 'model')} {lib.inputs.get('quantization')} {lib.inputs.get('target')}"


def regressions(points: list[Point], floor: float) -> list[Regression]:
    """What the newest point lost against the one before it (a different toolchain); tokens/s only when it dropped
    by more than `floor` (relative) with every timed run below the old ones."""
    if len(points) < 2:
        return []
    old, new = points[-2], points[-1]
    found = []
    runs = (old.tokens_per_s_runs, new.tokens_per_s_runs) if old.method == new.method else ([], [])  # a new series
    if runs[0] and runs[1] and max(runs[1]) < min(runs[0]) and slower(old.tokens_per_s, new.tokens_per_s, floor):
        found.append(
            Regression(what="tokens/s", before=old.tokens_per_s or 0, after=new.tokens_per_s or 0, floor=floor)
        )
    if old.kl_mean is not None and new.kl_mean is not None and kl_regressed(new.kl_mean, old.kl_mean):
        found.append(Regression(what="KL", before=old.kl_mean, after=new.kl_mean))
    if (
        old.peak_memory_bytes
        and new.peak_memory_bytes
        and new.peak_memory_bytes > MEMORY_GROWTH * old.peak_memory_bytes
    ):
        found.append(Regression(what="memory", before=old.peak_memory_bytes, after=new.peak_memory_bytes))
    return found


def slower(before: float | None, after: float | None, floor: float) -> bool:
    """The figure dropped by more than the floor noise stays under (MLC_FARM_SPEED_REGRESSION)."""
    return bool(before and after is not None and after < (1 - floor) * before)


SPEED_RULE = "tokens/s down by more than {floor:.0%}, with every timed run below the previous toolchain's"


def speed_rule(floor: float) -> str:
    """What makes a speed regression, for the page and `history`."""
    return SPEED_RULE.format(floor=floor)


def speed_series(points: list[Point]) -> list[Point]:
    """The points measured with the newest point's speed method: the series its tokens/s belong to."""
    return [p for p in points if p.method == points[-1].method] if points else []


def night_regressions(records: list[BuildRecord], checks: set[str], floor: float) -> list[str]:
    """Each regression of a cell whose newest point is one of `checks` (tonight's), against the toolchain
    before, one line each."""
    lines = []
    for (model, quantization, device), points in sorted(series(records).items()):
        if points[-1].check in checks:
            lines += [
                f"{model} {quantization} {device}: {r.describe()} ({points[-2].toolchain} -> {points[-1].toolchain})"
                for r in regressions(points, floor)
            ]
    return lines
