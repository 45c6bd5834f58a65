"""Run inside the toolchain's interpreter, in front of reference.py or run_library.py (never imported by
mlc_farm): next-token logits of a teacher-forced pass, summed up as the farm's `fidelity.Distributions` keeps
them. NumPy only.
"""

import json
import sys  # noqa: F401  (used by the script that follows)
import time  # noqa: F401


def summarize(rows, tokens, k, probe_ids):
    """Per position: top-k ids and log-probabilities, the next token's log-probability and, given the
    reference's top-k ids, the log-probabilities at those."""
    import numpy as np

    logits = np.asarray(rows, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logprobs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    top = np.argsort(-logprobs, axis=1, kind="stable")[:, :k]
    n = logprobs.shape[0]
    out = {
        "top_ids": top.tolist(),
        "top_logprobs": np.take_along_axis(logprobs, top, axis=1).round(6).tolist(),
        "next_logprobs": logprobs[np.arange(n), np.asarray(tokens[1 : n + 1])].round(6).tolist(),
    }
    if probe_ids is not None:
        out["probe_logprobs"] = np.take_along_axis(logprobs, np.asarray(probe_ids), axis=1).round(6).tolist()
    return out


def read_request(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
