"""What a library's validation found: its fit to the weights and its run on its device, as a build record
and a catalog entry keep them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mlc_farm.checks.speed import Speed
from mlc_farm.written import Written


class FitCheck(Written):
    """Does the library's metadata fit the weights and config it ships with (names, dtypes, shapes, options)."""

    status: Literal["passed", "failed", "not checked"]
    detail: str = ""


class RunCheck(Written):
    """Did the library generate with real weights on its device: finite logits, decode speed, peak memory."""

    status: Literal["passed", "failed", "not run"]
    detail: str = ""
    device: str | None = None
    method: str | None = None  # how tokens_per_s was measured: a figure compares only with one of its method
    tokens_per_s: float | None = None  # decode through the VM: the median of the timed runs
    tokens_per_s_runs: list[float] | None = None  # each timed run's, the noise band of a later comparison
    speeds: list[Speed] = Field(
        default_factory=list
    )  # every figure with its phase and method (decode, prefill, MLCEngine's)
    peak_memory_bytes: int | None = None
    ran_with: str | None = None


class Validation(Written):
    fits: FitCheck
    run: RunCheck

    @property
    def ok(self) -> bool:
        return self.fits.status != "failed" and self.run.status != "failed"

    def describe(self) -> str:
        """One line for tables: what was checked and how it went, never more than was checked."""
        fits = {"passed": "fits", "failed": "does not fit", "not checked": "fit not checked"}[self.fits.status]
        if self.fits.status == "failed":
            fits += f" ({self.fits.detail})"
        r = self.run
        if r.status == "passed":
            speed = f", {r.tokens_per_s:.0f} tok/s" if r.tokens_per_s else ""
            run = f"ran on {r.device}{speed}"
        else:
            run = f"{r.status}: {r.detail}" if r.detail else r.status
        return f"{fits}; {run}"
