"""Does a library compute its source model's function: its next-token distributions over a fixed evaluation
sequence, against a reference's (shared/mlc-reference, "Next-token distributions through a library").

Pure: the records of a check (its tokens, distributions, measures) and the gate; the metrics (top-1 agreement, KL(reference || library) per position, the
perplexity of the text under both), the thresholds per quantization family and the gate. The passes themselves
run in the toolchain's interpreter (`toolchain/scripts/reference.py`, `toolchain/scripts/run_library.py`).

A pass keeps, per position, the top-k log-probabilities and their token ids: KL is computed over those k
tokens and one bucket for the rest of the vocabulary, a lower bound of the full KL that is exact as k grows
(and close: the rest holds little mass in a peaked distribution). Never a number without a reference.
"""

from __future__ import annotations

from typing import Literal

from mlc_farm.matrix.fidelity_rules import EVAL_SET, SEED, Thresholds, kl_regressed
from mlc_farm.written import Written


class EvalTokens(Written):
    """The sequence every pass of a source runs: `tokens[i + 1]` is predicted at position i."""

    tokens: list[int]
    seeded: bool
    why: str = ""

    def describe(self) -> str:
        n = len(self.tokens) - 1
        return (
            f"seeded token ids (seed {SEED}, {n} positions): {self.why}"
            if self.seeded
            else f"{EVAL_SET} text, {n} positions"
        )


class Distributions(Written):
    """One pass over the evaluation tokens: per position, the top-k token ids and log-probabilities and the
    log-probability of the next token; a library pass also gives its log-probabilities at the reference's
    top-k ids (`probe_logprobs`) and its own top-1."""

    method: str
    tokens: list[int]
    seeded: bool
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]
    next_logprobs: list[float]
    probe_logprobs: list[list[float]] | None = None
    seconds: float | None = None


class Measured(Written):
    top1: float
    kl_mean: float
    kl_p99: float
    ppl_reference: float | None
    ppl_library: float | None
    positions: int


class Fidelity(Written):
    """A library's fidelity to its source, as a build record, catalog entry, card and page show it."""

    status: Literal["passed", "failed", "not measured", "reference"]
    detail: str = ""
    reference: str | None = None  # what the numbers are against
    evaluation: str | None = None  # which tokens
    measured: Measured | None = None
    thresholds: Thresholds | None = None
    seconds: float | None = None

    def describe(self) -> str:
        if self.status == "not measured":
            return f"fidelity not measured: {self.detail}"
        against = (self.reference or "").split(" (")[0]
        if self.status == "reference":
            return f"fidelity: the reference ({against})"
        m = self.measured
        assert m is not None
        text = f"top-1 {m.top1:.2f}, KL {m.kl_mean:.3g} (p99 {m.kl_p99:.3g}) vs {against}"
        return f"fidelity {self.status}: {text}" + (f" ({self.detail})" if self.detail else "")


def judge(m: Measured, limits: Thresholds, previous_kl: float | None = None) -> tuple[bool, str]:
    """(passes, why not): the thresholds, then the same library under the previous toolchain."""
    problems = []
    if limits.min_top1 is not None and m.top1 < limits.min_top1:
        problems.append(f"top-1 {m.top1:.3f} < {limits.min_top1:g}")
    if limits.max_kl is not None and m.kl_mean > limits.max_kl:
        problems.append(f"KL {m.kl_mean:.4f} > {limits.max_kl:g} ({limits.family})")
    if previous_kl is not None and kl_regressed(m.kl_mean, previous_kl):
        problems.append(f"KL {m.kl_mean:.4f} under this toolchain, {previous_kl:.4f} under the previous one")
    why = "; ".join(problems)
    return (not problems or not limits.gate), (f"recorded, not gated: {why}" if why and not limits.gate else why)
