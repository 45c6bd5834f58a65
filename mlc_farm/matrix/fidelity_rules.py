"""What a fidelity check is (its evaluation set, top-k, reference methods) and its gate's rules: the matrix's
`fidelity:` section, the thresholds per quantization family, what counts as a regression. Apart from the
measurement (mlc_farm/checks/fidelity.py, numpy), so the matrix, the plan and the CLI load without numpy."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictBool

EVAL_SET = "fidelity-v1"  # the name of the text below: a new text is a new evaluation set, a new reference
EVAL_TEXT = Path(__file__).parent / "eval" / f"{EVAL_SET}.txt"
TOP_K = 64
SEED = 0
POSITIONS = 128  # evaluation positions unless the matrix says otherwise
METHOD_TRANSFORMERS = "transformers float32"
# Highest precision first: the build of a source whose library can stand in for transformers.
REFERENCE_QUANTIZATIONS = ("q0f32", "q0f16", "q0bf16")


class Rules(BaseModel):
    """The matrix's `fidelity:` section (global, or per model over the global one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_top1: float | None = Field(default=None, ge=0, le=1)
    max_kl: float | None = Field(default=None, ge=0)
    gate: StrictBool | None = None  # false: measure and record, never fail a cell
    positions: int | None = Field(default=None, ge=8, le=8192)


class Thresholds(BaseModel):
    family: str
    min_top1: float | None
    max_kl: float | None
    gate: bool = True

    def describe(self) -> str:
        bounds = [
            f"top-1 >= {self.min_top1:g}" if self.min_top1 is not None else "",
            f"KL <= {self.max_kl:g}" if self.max_kl is not None else "",
        ]
        text = " and ".join(b for b in bounds if b) or "no bound"
        return text if self.gate else f"{text} (recorded, not gated)"


# Per quantization family, from what honest builds of real models measure (docs/concepts/validation.md, "Fidelity"): unquantized
# builds agree almost exactly; 8-bit floats lose little; 4- and 3-bit group quantization get a KL bound a few
# times what honest builds of small real models measure, so broken kernels or configs (KL of several nats) fail.
DEFAULTS = {
    "unquantized": Thresholds(family="unquantized", min_top1=0.95, max_kl=0.01),
    "8-bit": Thresholds(family="8-bit", min_top1=None, max_kl=0.05),
    "4-bit": Thresholds(family="4-bit", min_top1=None, max_kl=0.25),
    "3-bit": Thresholds(family="3-bit", min_top1=None, max_kl=0.75),
}
# A library whose KL is this much worse than the same library's under the previous toolchain has regressed.
REGRESSION_FACTOR, REGRESSION_SLACK = 2.0, 0.01


def kl_regressed(new: float, old: float) -> bool:
    """Is a KL far worse than the same library's under the previous toolchain (the gate's and history's rule)."""
    return new > REGRESSION_FACTOR * old + REGRESSION_SLACK


def family(quantization: str) -> str:
    if quantization.startswith("q0"):
        return "unquantized"
    if quantization.startswith(("q4", "q3")):
        return f"{quantization[1]}-bit"
    return "8-bit"


def thresholds(quantization: str, *rules: Rules | None) -> Thresholds:
    """The defaults of the quantization's family, with each of `rules` (global, then the model's) over them."""
    out = DEFAULTS[family(quantization)].model_copy()
    for r in (r for r in rules if r is not None):
        update = {k: v for k, v in r.model_dump(include={"min_top1", "max_kl", "gate"}).items() if v is not None}
        out = out.model_copy(update=update)
    return out


def positions(*rules: Rules | None) -> int:
    return next((r.positions for r in reversed(rules) if r is not None and r.positions), POSITIONS)
