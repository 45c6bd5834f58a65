"""How a library's speed is measured, and the figures a check records (shared/mlc-reference, "CUDA libraries on
a real NVIDIA GPU": at batch 1 the loop around the kernels dominates a short run that reads the logits back each
step, and the first run of a set is the slowest).

So the check (`toolchain/scripts/run_library.py`) first runs a few decode steps reading the logits back (the library
works), then times: decode, `DECODE_STEPS` steps per run with the logits left on the device and one
synchronisation at the end; prefill, one prompt of `PREFILL_TOKENS` (or the library's chunk); and, where the
toolchain has it, MLCEngine's chat completions as a method of their own. Each phase runs once to warm up, then
until its figure is stable (its last `MIN_RUNS` runs within `STABLE` of their median), `MAX_RUNS` runs, or its
share of the check's time budget is spent: a tenth of its library's compile (`budget`), so a slow device is
timed on fewer steps per run (powers of two, at least `MIN_STEPS`) instead of for minutes. Each figure says
the tokens each run timed and why its runs stopped; figures compare only within one method and phase (the
number of decode steps is not part of the method: at these context lengths a step costs the same).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlc_farm.written import Written

LIVENESS_STEPS = 8  # decode steps whose logits are read back and checked, before anything is timed
DECODE_STEPS = 128  # per timed decode run, at most
MIN_STEPS = 4  # per timed run (decode steps, prefill tokens), at least, however slow the device
MIN_RUNS, MAX_RUNS = 3, 10  # timed runs after the warm-up one: the median is the figure, the runs its noise band
STABLE = 0.05  # the last MIN_RUNS runs within this fraction of their median: the figure is stable
PREFILL_TOKENS = 512  # one long prompt, or the library's prefill chunk when smaller
BUDGET_SHARE = 0.1  # of the library's compile: the most a check spends timing speeds
MIN_BUDGET = 1.0  # seconds: a library that compiled in an instant is still timed
# What a check's key holds of the method: a change re-measures every cell instead of keeping old figures.
PLAN = {
    "liveness": LIVENESS_STEPS,
    "decode_steps": DECODE_STEPS,
    "min_steps": MIN_STEPS,
    "runs": [MIN_RUNS, MAX_RUNS],
    "stable": STABLE,
    "prefill": PREFILL_TOKENS,
    "budget": BUDGET_SHARE,
}


def budget(compile_seconds: float | None, most: float) -> float:
    """Seconds the check may spend timing speeds: a tenth of its library's compile, at least MIN_BUDGET, at most
    `most` (MLC_FARM_SPEED_SECONDS, which wins when it is less than MIN_BUDGET: an operator who asks for less
    timing gets it); `most` when the compile's time is not known."""
    if compile_seconds is None:
        return most
    return min(most, max(MIN_BUDGET, BUDGET_SHARE * compile_seconds))


class Speed(Written):
    """One measured speed: its phase, how it was measured (the words say it whole), the median, every run."""

    phase: Literal["decode", "prefill"]
    method: str
    tokens_per_s: float | None = None
    runs: list[float] = Field(default_factory=list)
    steps: int | None = None  # tokens per timed run: decode steps, prompt tokens, or the completion's tokens
    stopped: str | None = None  # why the timed runs stopped: "stable", "time budget", "10 runs"

    def describe(self) -> str:
        of = f" of {self.steps} tokens" if self.steps else ""
        why = f", {self.stopped}" if self.stopped else ""
        spread = f" ({min(self.runs):.1f}-{max(self.runs):.1f}, {len(self.runs)} runs{of}{why})" if self.runs else ""
        figure = f"{self.tokens_per_s:.1f} tokens/s{spread}" if self.tokens_per_s else "not measured"
        return f"{self.phase} {figure}: {self.method}"


def of_phase(speeds: list[Speed], phase: str, engine: bool = False) -> Speed | None:
    """The VM's figure of a phase (`engine`: MLCEngine's instead)."""
    return next((s for s in speeds if s.phase == phase and s.method.startswith("MLCEngine") == engine), None)
