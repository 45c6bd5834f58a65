"""The fidelity metrics (numpy): the evaluation tokens of a source, KL(reference || library) per position,
top-1 agreement and perplexity, from two passes' distributions (mlc_farm/checks/fidelity.py holds their records)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mlc_farm.checks.fidelity import Distributions, EvalTokens, Measured
from mlc_farm.matrix.fidelity_rules import EVAL_TEXT, SEED


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

    return Measured(
        top1=top1,
        kl_mean=float(kl.mean()),
        kl_p99=float(np.percentile(kl, 99)),
        ppl_reference=ppl(reference.next_logprobs),
        ppl_library=ppl(library.next_logprobs),
        positions=len(kl),
    )
