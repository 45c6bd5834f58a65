"""A tiny random Llama in Hugging Face format, for tests and examples/tiny-cpu.yaml: no torch, no download.

Same shape as the model behind shared/mlc-reference (hidden 128, 2 layers, vocab 1000), so the real
`mlc_llm` converts and compiles it in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-06,
    "rope_theta": 10000,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "torch_dtype": "float32",
    "transformers_version": "4.46.0",
}

_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "a build farm turns models into ready to run libraries",
    "weights do not depend on the device; libraries do not depend on the weights",
    "every night the farm rebuilds only what changed",
]


def _tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=354,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 512}, indent=2)
    )


# Std of the random weights: embeddings and head wide enough for peaked next-token distributions (entropy
# 3.6 nats, as the reference's tiny Llama), queries and keys enough for attention (and so the rope base) to
# matter, the rest small. With 0.02 everywhere the distributions are near-uniform and top-1 says little.
SPREAD = {"embed": 0.25, "query_key": 0.12, "other": 0.03}


def write_tiny_llama(out: Path, seed: int = 0, **config_overrides: int) -> Path:
    """Write config.json, model.safetensors, tokenizer.json, tokenizer_config.json into `out`."""
    import numpy as np
    from safetensors.numpy import save_file

    config = {**CONFIG, **config_overrides}
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head_dim = h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    rng = np.random.default_rng(seed)

    def w(*shape: int, std: float = SPREAD["other"]) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    tensors = {
        "model.embed_tokens.weight": w(config["vocab_size"], h, std=SPREAD["embed"]),
        "model.norm.weight": np.ones(h, "f4"),
    }
    tensors["lm_head.weight"] = w(config["vocab_size"], h, std=SPREAD["embed"])
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(h, "f4"),
            p + "post_attention_layernorm.weight": np.ones(h, "f4"),
            p + "self_attn.q_proj.weight": w(h, h, std=SPREAD["query_key"]),
            p + "self_attn.k_proj.weight": w(kv, h, std=SPREAD["query_key"]),
            p + "self_attn.v_proj.weight": w(kv, h),
            p + "self_attn.o_proj.weight": w(h, h),
            p + "mlp.gate_proj.weight": w(inter, h),
            p + "mlp.up_proj.weight": w(inter, h),
            p + "mlp.down_proj.weight": w(h, inter),
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    _tokenizer(out)
    return out
