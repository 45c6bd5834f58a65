"""Run inside the toolchain's interpreter after distributions.py (never imported by mlc_farm): the reference
next-token distributions of a source, from Hugging Face transformers in float32, every position in one call
(shared/mlc-reference). Prints one JSON object on its last line; {"unavailable": why} without torch or
transformers.

usage: python - SOURCE_DIR REQUEST_JSON   (request: {"tokens": [...], "k": K})
"""

# ruff: noqa: F821  (json, sys, time, summarize and read_request come from distributions.py, which runs first)


def reference(source_dir, request):
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        return {"unavailable": f"torch and transformers are not importable here ({e})"}
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(source_dir, dtype=torch.float32)
    model.eval()
    tokens = request["tokens"]
    with torch.no_grad():
        logits = model(torch.tensor([tokens[:-1]])).logits[0].float().numpy()
    out = summarize(logits, tokens, request["k"], None)
    return {**out, "seconds": time.perf_counter() - start}


if __name__ == "__main__":
    print(json.dumps(reference(sys.argv[1], read_request(sys.argv[2]))))
