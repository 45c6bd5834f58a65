"""Does a library compute its source model's function: its next-token distributions over a fixed evaluation
sequence, against a reference's (shared/mlc-reference, "Next-token distributions through a library").

Pure: the evaluation tokens, the metrics (top-1 agreement, KL(reference || library) per position, the
perplexity of the text under both), the thresholds per quantization family and the gate. The passes themselves
run in the toolchain's interpreter (`in_toolchain/reference.py`, `in_toolchain/run_library.py`).

A pass keeps, per position, the top-k log-probabilities and their token ids: KL is computed over those k
tokens and one bucket for the rest of the vocabulary, a lower bound of the full KL that is exact as k grows
(and close: the rest holds little mass in a peaked distribution). Never a number without a reference.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool

EVAL_SET = "fidelity-v1"  # the name of the text below: a new text is a new evaluation set, a new reference
EVAL_TEXT = Path(__file__).parent / "eval" / f"{EVAL_SET}.txt"
TOP_K = 64
SEED = 0
POSITIONS = 128
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
        bounds = [f"top-1 >= {self.min_top1:g}" if self.min_top1 is not None else "",
                  f"KL <= {self.max_kl:g}" if self.max_kl is not None else ""]  # fmt: skip
        text = " and ".join(b for b in bounds if b) or "no bound"
        return text if self.gate else f"{text} (recorded, not gated)"


# Per quantization family, from what honest builds of real models measure (README, "Fidelity"): unquantized
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


class EvalTokens(BaseModel):
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


def eval_tokens(tokenizer_json: Path | None, n_positions: int, vocab_size: int) -> EvalTokens:
    """The evaluation text through the model's own tokenizer; seeded ids where it cannot encode it into
    enough known tokens (a tiny test tokenizer, or more positions than the text has)."""
    need = n_positions + 1
    why = "no tokenizer.json"
    if tokenizer_json is not None and tokenizer_json.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        enc = tok.encode(EVAL_TEXT.read_text(encoding="utf-8"))
        unk = tok.token_to_id(str(tok.model.unk_token)) if getattr(tok.model, "unk_token", None) else None
        ids = list(enc.ids)
        unknown = sum(i == unk for i in ids) if unk is not None else 0
        if any(i >= vocab_size for i in ids):
            why = "the tokenizer gives ids beyond the model's vocabulary"
        elif unknown > len(ids) // 100:
            why = f"{unknown} of {len(ids)} tokens of the text are unknown to the tokenizer"
        elif len(ids) < need:
            why = f"the text is {len(ids)} tokens, {need} are needed"
        else:
            return EvalTokens(tokens=ids[:need], seeded=False)
    rng = np.random.default_rng(SEED)
    return EvalTokens(tokens=[int(i) for i in rng.integers(0, vocab_size, need)], seeded=True, why=why)


class Distributions(BaseModel):
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


class Measured(BaseModel):
    top1: float
    kl_mean: float
    kl_p99: float
    ppl_reference: float | None
    ppl_library: float | None
    positions: int


def kl_per_position(ref_logprobs: np.ndarray, lib_logprobs: np.ndarray) -> np.ndarray:
    """KL(reference || library) over the reference's top-k tokens and one bucket for the rest."""
    p, q = np.exp(ref_logprobs), np.exp(lib_logprobs)
    rest_p = np.clip(1 - p.sum(axis=1), 0, 1)
    rest_q = np.clip(1 - q.sum(axis=1), 1e-12, 1)
    head = (p * (ref_logprobs - lib_logprobs)).sum(axis=1)
    tail = np.where(rest_p > 1e-12, rest_p * (np.log(np.maximum(rest_p, 1e-12)) - np.log(rest_q)), 0.0)
    out: np.ndarray = np.maximum(head + tail, 0.0)
    return out


def compare(reference: Distributions, library: Distributions) -> Measured:
    if library.tokens != reference.tokens or library.probe_logprobs is None:
        raise ValueError("the library pass did not run the reference's tokens")
    kl = kl_per_position(np.array(reference.top_logprobs), np.array(library.probe_logprobs))
    top1 = float(np.mean([r[0] == lib[0] for r, lib in zip(reference.top_ids, library.top_ids, strict=True)]))

    def ppl(next_logprobs: list[float]) -> float | None:
        return None if reference.seeded else math.exp(-float(np.mean(next_logprobs)))

    return Measured(top1=top1, kl_mean=float(kl.mean()), kl_p99=float(np.percentile(kl, 99)),
                    ppl_reference=ppl(reference.next_logprobs), ppl_library=ppl(library.next_logprobs),
                    positions=len(kl))  # fmt: skip


class Fidelity(BaseModel):
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
