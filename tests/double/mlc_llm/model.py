"""Double of `mlc_llm.model`: the MODELS registry, each with its config class. Only `llama` converts and
compiles in this double; every type normalises its config like the real classes do (`from_dict` keeps the
known fields and puts the rest in `kwargs`, `__post_init__` fills the derived ones), which is what mlc_llm's
JIT key is computed over."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any


@dataclasses.dataclass
class LlamaConfig:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int
    rms_norm_eps: float
    vocab_size: int
    tie_word_embeddings: bool = False
    position_embedding_base: int = 0
    rope_scaling: dict | None = None
    context_window_size: int = 0
    prefill_chunk_size: int = 0
    num_key_value_heads: int = 0
    head_dim: int = 0
    tensor_parallel_shards: int = 1
    pipeline_parallel_stages: int = 1
    max_batch_size: int = 1
    disaggregation: bool = False
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.position_embedding_base == 0:
            self.position_embedding_base = int(self.kwargs.pop("rope_theta", 10000))
        if self.context_window_size == 0:
            if "max_position_embeddings" not in self.kwargs:
                raise ValueError("Unable to determine the maximum sequence length")
            self.context_window_size = int(self.kwargs.pop("max_position_embeddings"))
        if self.num_key_value_heads == 0:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.prefill_chunk_size == 0:
            self.prefill_chunk_size = min(self.context_window_size, 8192)
        self.context_window_size = int(self.context_window_size)

    @classmethod
    def from_dict(cls, source: dict[str, Any]) -> LlamaConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"kwargs"}
        return cls(**{k: v for k, v in source.items() if k in names},
                   kwargs={k: v for k, v in source.items() if k not in names})  # fmt: skip

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


MODELS = {
    name: SimpleNamespace(name=name, config=LlamaConfig)
    for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt2")
}
