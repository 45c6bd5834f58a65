"""How a library's speed is measured, and the figures a check records (shared/mlc-reference, "CUDA libraries on
a real NVIDIA GPU": at batch 1 the loop around the kernels dominates a short run that reads the logits back each
step, and the first run of a set is the slowest).

So the check (`toolchain/scripts/run_library.py`) first runs a few decode steps reading the logits back (the library
works), then times: decode, after a warm-up run, `DECODE_STEPS` steps per run with the logits left on the device
and one synchronisation at the end; prefill, one prompt of `PREFILL_TOKENS` (or the library's chunk); and,
where the toolchain has it, MLCEngine's chat completions as a method of their own. Each figure keeps its method
and every run: figures compare only within one method and phase.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

LIVENESS_STEPS = 8  # decode steps whose logits are read back and checked, before anything is timed
DECODE_STEPS = 128  # per timed decode run
TIMED_RUNS = 3  # after a warm-up run; the median is the figure, the runs its noise band
PREFILL_TOKENS = 512  # one long prompt, or the library's prefill chunk when smaller
# What a check's key holds of the method: a change re-measures every cell instead of keeping old figures.
PLAN = {"liveness": LIVENESS_STEPS, "decode_steps": DECODE_STEPS, "runs": TIMED_RUNS, "prefill": PREFILL_TOKENS}


class Speed(BaseModel):
    """One measured speed: its phase, how it was measured (the words say it whole), the median, every run."""

    phase: Literal["decode", "prefill"]
    method: str
    tokens_per_s: float | None = None
    runs: list[float] = []

    def describe(self) -> str:
        spread = f" ({min(self.runs):.1f}-{max(self.runs):.1f})" if len(self.runs) > 1 else ""
        figure = f"{self.tokens_per_s:.1f} tokens/s{spread}" if self.tokens_per_s else "not measured"
        return f"{self.phase} {figure}: {self.method}"


def of_phase(speeds: list[Speed], phase: str, engine: bool = False) -> Speed | None:
    """The VM's figure of a phase (`engine`: MLCEngine's instead)."""
    return next((s for s in speeds if s.phase == phase and s.method.startswith("MLCEngine") == engine), None)
