"""Test double of `python -m mlc_llm convert_weight|gen_config|compile`, after shared/mlc-reference.

Same flags (argparse rejects unknown ones and unknown quantizations with exit 2), the same input checks
(config.json, weights present, devices that must exist locally) and the same output files with the same
structure as the reference's sample outputs. Knobs for tests, all optional:
  MLC_DOUBLE_LOG=FILE      append one JSON line per invocation (to count toolchain runs)
  MLC_DOUBLE_FAIL=STEP[:S] exit 1 in STEP (when S is given, only if S occurs in the arguments)
  MLC_DOUBLE_HANG=STEP     sleep forever in STEP
  MLC_DOUBLE_SLEEP=SECONDS sleep that long in every step (to kill a build half-way)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

QUANTIZATIONS = [
    "q0f16", "q0bf16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4bf16_0", "q4bf16_1",
    "q4f32_1", "q4f16_2", "q4f16_autoawq", "q4f16_ft", "e5m2_e5m2_f16", "e4m3_e4m3_f16",
    "e4m3_e4m3_f16_max_calibrate", "fp8_e4m3fn_bf16_block_scale",
    "fp8_e4m3fn_bf16_block_scale_static_activation",
]  # fmt: skip
MODEL_TYPES = ["auto", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2"]
CONV_TEMPLATES = {
    "LM": {"system_template": "{system_message}", "system_prefix_token_ids": [1], "stop_token_ids": [2],
           "roles": {"user": "", "assistant": ""}, "seps": [""], "role_content_sep": "", "role_empty_sep": ""},
    "llama-3": {"system_template": "<|start_header_id|>system<|end_header_id|>\n\n{system_message}<|eot_id|>",
                "system_prefix_token_ids": [128000], "stop_token_ids": [128001, 128009],
                "roles": {"user": "<|start_header_id|>user", "assistant": "<|start_header_id|>assistant"},
                "seps": ["<|eot_id|>"], "role_content_sep": "<|end_header_id|>\n\n",
                "role_empty_sep": "<|end_header_id|>\n\n"},
    "chatml": {"system_template": "<|im_start|>system\n{system_message}<|im_end|>\n",
               "system_prefix_token_ids": None, "stop_token_ids": [2],
               "roles": {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
               "seps": ["<|im_end|>\n"], "role_content_sep": "\n", "role_empty_sep": "\n"},
    "qwen2": {"system_template": "<|im_start|>system\n{system_message}<|im_end|>\n",
              "system_prefix_token_ids": None, "stop_token_ids": [151643, 151645],
              "roles": {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"},
              "seps": ["<|im_end|>\n"], "role_content_sep": "\n", "role_empty_sep": "\n"},
    "redpajama_chat": {"system_template": "{system_message}", "system_prefix_token_ids": None,
                       "stop_token_ids": [0], "roles": {"user": "<human>", "assistant": "<bot>"},
                       "seps": ["\n"], "role_content_sep": ": ", "role_empty_sep": ":"},
}  # fmt: skip
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "added_tokens.json"]  # fmt: skip
PRESETS = ["iphone", "macabi", "android", "android:adreno", "android:adreno-so", "windows:adreno_x86",
           "metal:x86-64", "metal:generic", "vulkan:generic", "webgpu", "mali", "llvm"]  # fmt: skip
LOCAL_DEVICES = ["cuda", "rocm", "vulkan", "metal", "opencl", "cpu", "auto"]
TARGET_KINDS = ["cuda", "rocm", "vulkan", "metal", "opencl", "llvm", "webgpu", "c"]
LIB_SUFFIXES = (".so", ".dylib", ".dll", ".tar", ".lib", ".wasm")
SHARD_CAP = 32 * 1024 * 1024


def fail(message: str, code: int = 1) -> None:
    print(f"ValueError: {message}", file=sys.stderr)
    sys.exit(code)


def knobs(step: str) -> None:
    if log := os.environ.get("MLC_DOUBLE_LOG"):
        with open(log, "a") as f:
            f.write(json.dumps({"step": step, "argv": sys.argv[1:], "pid": os.getpid()}) + "\n")
    print(f"[mlc_llm double] {step} {' '.join(sys.argv[2:])}", flush=True)
    if seconds := os.environ.get("MLC_DOUBLE_SLEEP"):
        time.sleep(float(seconds))
    if os.environ.get("MLC_DOUBLE_HANG") == step:
        while True:
            time.sleep(60)
    rule = os.environ.get("MLC_DOUBLE_FAIL", "")
    fail_step, _, needle = rule.partition(":")
    if fail_step == step and (not needle or needle in " ".join(sys.argv)):
        for i in range(40):
            print(f"{step}: working {i}")
        fail(f"injected failure in {step}")


def model_dir(arg: str) -> Path:
    path = Path(arg)
    path = path.parent if path.name == "config.json" else path
    if not (path / "config.json").is_file():
        fail(f"Cannot find config.json in {arg}. Please provide a valid model directory or config.json")
    return path


def model_type(requested: str, config: dict) -> str:
    found = config.get("model_type") if requested == "auto" else requested
    if found not in MODEL_TYPES[1:]:
        fail(f"Unknown model type: {found}. Available ones: {MODEL_TYPES[1:]}")
    return found


def load_weights(path: Path, source_format: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    safetensors = sorted(path.glob("*.safetensors"))
    if source_format in ("auto", "huggingface-safetensor") and safetensors:
        out: dict[str, np.ndarray] = {}
        for f in safetensors:
            out |= load_file(str(f))
        return out
    if sorted(path.glob("pytorch_model*.bin")):
        fail("huggingface-torch weights need torch, which this double does not load")
    fail(f"Cannot find weights in {path}: no *.safetensors or pytorch_model*.bin (source format {source_format})")
    raise AssertionError


def quant_scheme(q: str) -> tuple[int, str]:
    """(bits, model dtype): 16/32 bits means no quantization."""
    dtype = "float32" if "f32" in q else "bfloat16" if "bf16" in q and q.startswith("q") else "float16"
    if q.startswith("q0"):
        return (32 if dtype == "float32" else 16), dtype
    if q.startswith(("q3", "q4")):
        return int(q[1]), dtype
    return 8, "float16"


def bf16_bytes(a: np.ndarray) -> bytes:
    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def params(weights: dict[str, np.ndarray], layers: int) -> list[tuple[str, np.ndarray]]:
    """MLC's parameter order and fusions (qkv_proj, gate_up_proj) for a Llama."""
    out = [
        ("lm_head.weight", weights["lm_head.weight"]),
        ("model.embed_tokens.weight", weights["model.embed_tokens.weight"]),
    ]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", weights[p + "input_layernorm.weight"]),
            (p + "mlp.down_proj.weight", weights[p + "mlp.down_proj.weight"]),
            (p + "mlp.gate_up_proj.weight",
             np.concatenate([weights[p + "mlp.gate_proj.weight"], weights[p + "mlp.up_proj.weight"]])),
            (p + "post_attention_layernorm.weight", weights[p + "post_attention_layernorm.weight"]),
            (p + "self_attn.qkv_proj.weight",
             np.concatenate([weights[p + f"self_attn.{x}_proj.weight"] for x in "qkv"])),
            (p + "self_attn.o_proj.weight", weights[p + "self_attn.o_proj.weight"]),
        ]  # fmt: skip
    return [*out, ("model.norm.weight", weights["model.norm.weight"])]


def quantize(name: str, w: np.ndarray, q: str) -> list[tuple[str, str, list[int], bytes, int]]:
    """[(name, dtype, shape, stored bytes, logical bytes)] for one parameter."""
    bits, dtype = quant_scheme(q)
    if bits >= 16 or w.ndim == 1:
        if dtype == "float32":
            return [(name, "float32", list(w.shape), bf16_bytes(w), w.size * 4)]
        data = bf16_bytes(w) if dtype == "bfloat16" else w.astype(np.float16).tobytes()
        return [(name, dtype, list(w.shape), data, w.size * 2)]
    group, per_word = 32, 32 // bits
    out_dim, in_dim = w.shape
    groups = w.reshape(out_dim, in_dim // group, group)
    scale = np.abs(groups).max(axis=2) / (2 ** (bits - 1) - 1) + 1e-12
    levels = np.clip(np.round(groups / scale[..., None]) + 2 ** (bits - 1), 0, 2**bits - 1).astype(np.uint32)
    levels = levels.reshape(out_dim, -1)
    pad = (-levels.shape[1]) % per_word
    levels = np.pad(levels, ((0, 0), (0, pad))).reshape(out_dim, -1, per_word)
    packed = np.zeros(levels.shape[:2], np.uint32)
    for i in range(per_word):
        packed |= levels[..., i] << np.uint32(i * bits)
    base = name.removesuffix(".weight")
    scale_t = scale.astype(np.float16 if dtype == "float16" else np.float32)
    return [
        (base + ".q_weight", "uint32", list(packed.shape), packed.tobytes(), packed.nbytes),
        (base + ".q_scale", str(scale_t.dtype), list(scale_t.shape), scale_t.tobytes(), scale_t.nbytes),
    ]


def convert_weight(args: argparse.Namespace) -> None:
    knobs("convert_weight")
    src = model_dir(args.config)
    config = json.loads((src / "config.json").read_text())
    model_type(args.model_type, config)
    if args.device not in ("auto", "cpu"):
        fail(f"Device {args.device} is not found on this machine")
    weights = load_weights(Path(args.source) if args.source else src, args.source_format)
    tensors = [
        t for name, w in params(weights, config["num_hidden_layers"]) for t in quantize(name, w, args.quantization)
    ]
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    shards: list[list] = [[]]
    for t in tensors:
        if shards[-1] and sum(len(x[3]) for x in shards[-1]) + len(t[3]) > SHARD_CAP:
            shards.append([])
        shards[-1].append(t)
    records, b16_records = [], []
    for i, shard in enumerate(shards):
        data_path = f"params_shard_{i}.bin"
        offset, recs, b16, md5 = 0, [], [], hashlib.md5()
        with open(out / data_path, "wb") as f:
            for name, dtype, shape, data, _ in shard:
                f.write(data)
                md5.update(data)
                recs.append({"name": name, "shape": shape, "dtype": dtype, "format": "f32-to-bf16",
                             "nbytes": len(data), "byteOffset": offset})  # fmt: skip
                b16.append({**recs[-1], "dtype": "bfloat16" if dtype == "float32" else dtype, "format": "raw"})
                offset += len(data)
        records.append({"dataPath": data_path, "format": "raw-shard", "nbytes": offset, "records": recs,
                        "md5sum": md5.hexdigest()})  # fmt: skip
        b16_records.append({**records[-1], "records": b16})
    n_params = sum(w.size for w in weights.values())
    param_bytes = float(sum(t[4] for t in tensors))
    meta = {"ParamSize": len(tensors), "ParamBytes": param_bytes, "BitsPerParam": param_bytes * 8 / n_params}
    (out / "tensor-cache.json").write_text(json.dumps({"metadata": meta, "records": records}, indent=4))
    if any(t[1] == "float32" for t in tensors):
        (out / "tensor-cache-b16.json").write_text(json.dumps({"metadata": meta, "records": b16_records}, indent=4))
    print(f"Parameter size after quantization: {param_bytes / 2**30:.3f} GB")
    print(f"Saved to directory: {out}")


def gen_config(args: argparse.Namespace) -> None:
    knobs("gen_config")
    src = model_dir(args.config)
    config = json.loads((src / "config.json").read_text())
    mtype = model_type(args.model_type, config)
    generation = (
        json.loads((src / "generation_config.json").read_text()) if (src / "generation_config.json").exists() else {}
    )
    ctx = args.context_window_size or config.get("max_position_embeddings", 2048)
    prefill = args.prefill_chunk_size or min(ctx, 8192)
    tp, pp = args.tensor_parallel_shards or 1, args.pipeline_parallel_stages or 1
    heads = config["num_attention_heads"]
    model_config = {
        "hidden_size": config["hidden_size"], "intermediate_size": config["intermediate_size"],
        "num_attention_heads": heads, "num_hidden_layers": config["num_hidden_layers"],
        "rms_norm_eps": config.get("rms_norm_eps", 1e-6), "vocab_size": config["vocab_size"],
        "tie_word_embeddings": config.get("tie_word_embeddings", False),
        "position_embedding_base": config.get("rope_theta", 10000), "rope_scaling": config.get("rope_scaling"),
        "context_window_size": ctx, "prefill_chunk_size": prefill,
        "num_key_value_heads": config.get("num_key_value_heads", heads),
        "head_dim": config.get("head_dim", config["hidden_size"] // heads),
        "tensor_parallel_shards": tp, "pipeline_parallel_stages": pp, "max_batch_size": args.max_batch_size,
        "disaggregation": False,
    }  # fmt: skip
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            (out / name).write_bytes((src / name).read_bytes())
            copied.append(name)
    active_vocab = config["vocab_size"]
    decoder_type = None
    if (src / "tokenizer.json").exists():
        tok = json.loads((src / "tokenizer.json").read_text())
        active_vocab = len(tok["model"]["vocab"]) + len(
            [t for t in tok.get("added_tokens", []) if t["content"] not in tok["model"]["vocab"]]
        )
        decoder_type = (tok.get("decoder") or {}).get("type")
    template = {"name": args.conv_template, **CONV_TEMPLATES[args.conv_template]}
    conv = {
        "name": template["name"], "system_template": template["system_template"], "system_message": "",
        "system_prefix_token_ids": template["system_prefix_token_ids"], "add_role_after_system_message": True,
        "roles": template["roles"],
        "role_templates": {"user": "{user_message}", "assistant": "{assistant_message}", "tool": "{tool_message}"},
        "messages": [], "seps": template["seps"], "role_content_sep": template["role_content_sep"],
        "role_empty_sep": template["role_empty_sep"], "stop_str": [], "stop_token_ids": template["stop_token_ids"],
        "strip_reasoning_in_history": False, "function_string": "", "use_function_calling": False,
    }  # fmt: skip
    chat = {
        "version": "0.1.0", "model_type": mtype, "quantization": args.quantization, "model_config": model_config,
        "vocab_size": config["vocab_size"], "context_window_size": ctx,
        "sliding_window_size": args.sliding_window_size or -1, "prefill_chunk_size": prefill,
        "attention_sink_size": args.attention_sink_size or -1, "tensor_parallel_shards": tp,
        "pipeline_parallel_stages": pp, "active_vocab_size": active_vocab,
        "temperature": float(generation.get("temperature", 1.0)), "presence_penalty": 0.0,
        "frequency_penalty": 0.0, "repetition_penalty": float(generation.get("repetition_penalty", 1.0)),
        "top_p": float(generation.get("top_p", 1.0)), "tokenizer_files": copied,
        "tokenizer_info": {"token_postproc_method": "byte_level" if decoder_type == "ByteLevel" else "byte_fallback",
                           "prepend_space_in_encode": False, "strip_space_in_decode": False},
        "conv_template": conv, "pad_token_id": config.get("pad_token_id", 0),
        "bos_token_id": config.get("bos_token_id", 1), "eos_token_id": config.get("eos_token_id", 2),
        "model_task": "chat", "embedding_metadata": None,
    }  # fmt: skip
    (out / "mlc-chat-config.json").write_text(json.dumps(chat, indent=2))
    print(f"Dumping configuration file to: {out / 'mlc-chat-config.json'}")


def check_device(device: str) -> None:
    if device in PRESETS:
        return
    if device.split(":")[0] in LOCAL_DEVICES:
        fail(f"Cannot detect device `{device}`. Please make sure the device and its driver are installed.")
    if device.startswith("{"):
        try:
            kind = json.loads(device).get("kind")
        except json.JSONDecodeError as e:
            fail(f"Invalid target JSON {device!r}: {e}")
    else:
        kind = device.split()[0]
    if kind not in TARGET_KINDS:
        fail(f"Cannot parse target {device!r}: unknown target kind {kind!r}")


def compile_(args: argparse.Namespace) -> None:
    knobs("compile")
    path = Path(args.model)
    config_path = path / "mlc-chat-config.json" if path.is_dir() else path
    if not config_path.is_file() or config_path.name != "mlc-chat-config.json":
        fail(f"'{args.model}' is not a mlc-chat-config.json or a directory holding one")
    chat = json.loads(config_path.read_text())
    check_device(args.device)
    out = Path(args.output)
    if out.suffix not in LIB_SUFFIXES:
        fail(f"Unsupported output file suffix {out.suffix!r}: expected one of {LIB_SUFFIXES}")
    overrides = {}
    for item in filter(None, (args.overrides or "").split(";")):
        key, _, value = item.partition("=")
        if key not in (
            "context_window_size",
            "sliding_window_size",
            "prefill_chunk_size",
            "attention_sink_size",
            "max_batch_size",
            "tensor_parallel_shards",
            "pipeline_parallel_stages",
            "disaggregation",
        ):
            fail(f"Unknown override {key!r}")
        overrides[key] = value
    identity = {
        "model_type": args.model_type if args.model_type != "auto" else chat["model_type"],
        "model_config": chat["model_config"], "quantization": args.quantization or chat["quantization"],
        "device": args.device, "opt": args.opt, "overrides": overrides, "host": args.host,
        "multi_arch": os.environ.get("MLC_MULTI_ARCH"),
    }  # fmt: skip
    body = json.dumps(identity, sort_keys=True).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"\x7fELF\x02\x01\x01" + body + bytes(math.ceil(len(body) / 64) * 64))
    print(f"Generated: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="mlc_llm")
    sub = parser.add_subparsers(dest="subcommand", required=True)

    p = sub.add_parser("convert_weight")
    p.add_argument("config")
    p.add_argument("--quantization", required=True, choices=QUANTIZATIONS)
    p.add_argument("--model-type", default="auto", choices=MODEL_TYPES)
    p.add_argument("--device", default="auto")
    p.add_argument("--source")
    p.add_argument("--source-format", default="auto",
                   choices=["auto", "huggingface-torch", "huggingface-safetensor", "awq"])  # fmt: skip
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--lora-adapter")
    p.set_defaults(func=convert_weight)

    p = sub.add_parser("gen_config")
    p.add_argument("config")
    p.add_argument("--quantization", required=True, choices=QUANTIZATIONS)
    p.add_argument("--model-type", default="auto", choices=MODEL_TYPES)
    p.add_argument("--conv-template", required=True, choices=list(CONV_TEMPLATES))
    for flag in ("--context-window-size", "--sliding-window-size", "--prefill-chunk-size", "--attention-sink-size",
                 "--tensor-parallel-shards", "--pipeline-parallel-stages"):  # fmt: skip
        p.add_argument(flag, type=int)
    p.add_argument("--max-batch-size", type=int, default=128)
    p.add_argument("--output", "-o", required=True)
    p.set_defaults(func=gen_config)

    p = sub.add_parser("compile")
    p.add_argument("model")
    p.add_argument("--quantization", choices=QUANTIZATIONS)
    p.add_argument("--model-type", default="auto", choices=MODEL_TYPES)
    p.add_argument("--device", default="auto")
    p.add_argument("--host", default="auto")
    p.add_argument("--opt", default="O2")
    p.add_argument("--system-lib-prefix", default="auto")
    p.add_argument("--output", "-o", required=True)
    p.add_argument("--overrides", default="")
    p.add_argument("--debug-dump")
    p.set_defaults(func=compile_)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
