"""Double of `mlc_llm.model`: the MODELS registry. Only `llama` converts and compiles in this double."""

from __future__ import annotations

from types import SimpleNamespace

MODELS = {
    name: SimpleNamespace(name=name)
    for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt2")
}
