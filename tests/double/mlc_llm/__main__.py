"""Test double of `python -m mlc_llm convert_weight|gen_config|compile`, after shared/mlc-reference.

Same flags (argparse rejects unknown ones and unknown quantizations with exit 2), the same input checks
(config.json, weights present, devices that must exist locally) and the same output files with the same
structure as the reference's sample outputs. Like the real tool, convert_weight writes
`model.safetensors.index.json` into a source directory holding a single `model.safetensors`, logs carry ANSI
colours and tqdm progress bars redrawn with carriage returns, and compile bakes the host CPU into the library
unless `--host` names a triple. Knobs for tests, all optional:
  MLC_DOUBLE_LOG=FILE      append one JSON line per invocation (to count toolchain runs)
  MLC_DOUBLE_FAIL=STEP[:S] exit 1 in STEP (when S is given, only if S occurs in the arguments)
  MLC_DOUBLE_HANG=STEP[:S] sleep forever in STEP (when S is given, only if S occurs in the arguments)
  MLC_DOUBLE_SLEEP=SECONDS sleep that long in every step (to kill a build half-way)
  MLC_DOUBLE_READONLY=DIR  DIR is a read-only volume: writing under it fails with EROFS
  MLC_DOUBLE_HOST_CPU=CPU  the CPU `--host auto` finds (default znver3)
  MLC_DOUBLE_BAD_METADATA=1  compile a library whose metadata does not fit the weights
  MLC_DOUBLE_NAN=1         compile a library whose logits are NaN
  MLC_DOUBLE_ROPE_BASE=B   compile a library with rope base B: it fits its weights, runs, and computes another
                           function (the reference's wrong-rope-base library)
  MLC_DOUBLE_ENV_LOG=FILE  append the environment names each invocation sees (to check what it is given)
  MLC_DOUBLE_ENV_DUMP=FILE append the whole environment each invocation sees (to check no secret is in it)
  MLC_DOUBLE_CONVERT_CHANGE=TYPE  convert_weight of model type TYPE stores its tensors in another order (a
                           converter that changed: same tensors, other bytes)
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import mlc_llm
from mlc_llm import _library
from mlc_llm.conversation_template import ConvTemplateRegistry
from mlc_llm.model import MODELS
from mlc_llm.quantization import QUANTIZATION

if TYPE_CHECKING:
    import numpy as np

QUANTIZATIONS = list(QUANTIZATION)
MODEL_TYPES = ["auto", *MODELS]
CONV_TEMPLATES = ConvTemplateRegistry._conv_templates
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "added_tokens.json"]  # fmt: skip
PRESETS = ["iphone", "macabi", "android", "android:adreno", "android:adreno-so", "windows:adreno_x86",
           "metal:x86-64", "metal:generic", "vulkan:generic", "webgpu", "mali", "llvm"]  # fmt: skip
LOCAL_DEVICES = ["cuda", "rocm", "vulkan", "metal", "opencl", "cpu", "auto"]
TARGET_KINDS = ["cuda", "rocm", "vulkan", "metal", "opencl", "llvm", "webgpu", "c"]
LIB_SUFFIXES = (".so", ".dylib", ".dll", ".tar", ".lib", ".wasm")
SHARD_CAP = 32 * 1024 * 1024


_bar = ""  # the progress bar on screen, which tqdm clears before a log line and redraws after it


def log(file: str, message: str) -> None:
    """A log line the way the real tool prints it: timestamp, level, source, ANSI-coloured words."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    message = message.replace("Found", "\x1b[92mFound\x1b[0m").replace("Not found", "\x1b[91mNot found\x1b[0m")
    clear = f"\r{' ' * len(_bar)}\r" if _bar else ""
    sys.stderr.write(f"{clear}[{stamp}] INFO {file}: {message}\n" + (f"\r{_bar}" if _bar else ""))
    sys.stderr.flush()


def progress(done: int, total: int) -> None:
    """A tqdm bar on stderr, redrawn in place with carriage returns."""
    global _bar
    bar = "\u2588" * (10 * done // total)
    _bar = f"{100 * done // total:3d}%|{bar:<10}| {done}/{total} [00:00<00:00, 2.82it/s]"
    sys.stderr.write(f"\r{_bar}")
    if done == total:
        sys.stderr.write("\n")
        _bar = ""
    sys.stderr.flush()


def write_text(path: Path, text: str) -> None:
    """Write a file, failing as a read-only volume would under MLC_DOUBLE_READONLY."""
    readonly = os.environ.get("MLC_DOUBLE_READONLY")
    if readonly and path.resolve().is_relative_to(Path(readonly).resolve()):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    path.write_text(text)


def fail(message: str, code: int = 1, error: str = "ValueError") -> None:
    print(f"{error}: {message}", file=sys.stderr)
    sys.exit(code)


def compilers(device: str, kind: str) -> dict[str, str]:
    """What compiling for webgpu and android:adreno-so needs beyond the wheel, as the real tool finds it (or
    fails without it): emcc and mlc_wasm_runtime.bc (./web/dist/wasm, then $MLC_LLM_SOURCE_DIR), TVM_NDK_CC."""
    found = {}
    if kind == "webgpu":
        if shutil.which("emcc") is None:
            fail("emcc not found on PATH: compiling for webgpu needs Emscripten", error="RuntimeError")
        bases = [
            Path.cwd(),
            *([Path(os.environ["MLC_LLM_SOURCE_DIR"])] if os.environ.get("MLC_LLM_SOURCE_DIR") else []),
        ]
        if not any((b / "web" / "dist" / "wasm" / "mlc_wasm_runtime.bc").is_file() for b in bases):
            fail("Cannot find library: mlc_wasm_runtime.bc\nHint: build it with web/prep_emcc_deps.sh in the mlc-llm "
                 "source tree and set MLC_LLM_SOURCE_DIR to that tree", error="RuntimeError")  # fmt: skip
        said = subprocess.run(["emcc", "--version"], capture_output=True, text=True, check=True).stdout
        found["emcc"] = said.splitlines()[0]
    if device == "android:adreno-so" and not os.environ.get("TVM_NDK_CC"):
        fail("Require environment variable TVM_NDK_CC", error="RuntimeError")
    return found


def knobs(step: str) -> None:
    if calls := os.environ.get("MLC_DOUBLE_LOG"):
        with open(calls, "a") as f:
            f.write(json.dumps({"step": step, "argv": sys.argv[1:], "pid": os.getpid()}) + "\n")
    if env_log := os.environ.get("MLC_DOUBLE_ENV_LOG"):
        with open(env_log, "a") as f:
            f.write(json.dumps(sorted(os.environ)) + "\n")
    if env_dump := os.environ.get("MLC_DOUBLE_ENV_DUMP"):
        with open(env_dump, "a") as f:
            f.write(json.dumps(dict(os.environ)) + "\n")
    print(f"[mlc_llm double] {step} {' '.join(sys.argv[2:])}", flush=True)
    if seconds := os.environ.get("MLC_DOUBLE_SLEEP"):
        time.sleep(float(seconds))
    hang_step, _, hang_needle = os.environ.get("MLC_DOUBLE_HANG", "").partition(":")
    if hang_step == step and (not hang_needle or hang_needle in " ".join(sys.argv)):
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


def safetensors_index(path: Path) -> Path:
    """The index convert_weight reads weights through; like `_check_safetensor` of the real tool, written
    next to a lone `model.safetensors` in the source directory when it is missing."""
    from safetensors.numpy import load_file

    index = path / "model.safetensors.index.json"
    if not index.exists() and (path / "model.safetensors").is_file():
        tensors = load_file(str(path / "model.safetensors"))
        doc = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
               "weight_map": {name: "model.safetensors" for name in sorted(tensors)}}  # fmt: skip
        write_text(index, json.dumps(doc, indent=2))
    return index


def load_weights(path: Path, source_format: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    safetensors = sorted(path.glob("*.safetensors"))
    if source_format in ("auto", "huggingface-safetensor") and safetensors:
        index = safetensors_index(path)
        log("auto_weight.py:161", f"Found source weight format: huggingface-safetensor. Source configuration: {index}")
        out: dict[str, np.ndarray] = {}
        for f in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            log("huggingface_loader.py:188", f"Loading HF parameters from: {path / f}")
            out |= load_file(str(path / f))
        return out
    if sorted(path.glob("pytorch_model*.bin")):
        fail("huggingface-torch weights need torch, which this double does not load")
    fail(f"Cannot find weights in {path}: no *.safetensors or pytorch_model*.bin (source format {source_format})")
    raise AssertionError


def bf16_bytes(a: np.ndarray) -> bytes:
    import numpy as np

    bits = a.astype(np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def params(weights: dict[str, np.ndarray], layers: int) -> list[tuple[str, np.ndarray]]:
    """MLC's parameter order and fusions (qkv_proj, gate_up_proj) for a Llama."""
    import numpy as np

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
    import numpy as np

    bits, dtype, scale_dtype = _library.layout(q)
    if bits >= 16 or w.ndim == 1:
        if dtype == "float32":
            return [(name, "float32", list(w.shape), bf16_bytes(w), w.size * 4)]
        data = bf16_bytes(w) if dtype == "bfloat16" else w.astype(np.float16).tobytes()
        return [(name, dtype, list(w.shape), data, w.size * 2)]
    group, per_word = _library.GROUP, 32 // bits
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
    scale_t = scale.astype(scale_dtype)
    return [
        (base + ".q_weight", "uint32", list(packed.shape), packed.tobytes(), packed.nbytes),
        # float32 records are stored as bf16 ("f32-to-bf16"), scales included
        (
            base + ".q_scale",
            str(scale_t.dtype),
            list(scale_t.shape),
            bf16_bytes(scale_t) if scale_dtype == "float32" else scale_t.tobytes(),
            scale_t.nbytes,
        ),
    ]


def convert_weight(args: argparse.Namespace) -> None:
    knobs("convert_weight")
    src = model_dir(args.config)
    log("auto_config.py:113", f"Found model configuration: {src / 'config.json'}")
    config = json.loads((src / "config.json").read_text())
    model_type(args.model_type, config)
    if args.device not in ("auto", "cpu"):
        fail(f"Device {args.device} is not found on this machine")
    weights = load_weights(Path(args.source) if args.source else src, args.source_format)
    pairs = params(weights, config["num_hidden_layers"])
    sys.stderr.write(f"Start storing to cache {args.output}\n")
    if os.environ.get("MLC_DOUBLE_CONVERT_CHANGE") == config.get("model_type"):
        pairs = pairs[::-1]
    tensors = []
    for i, (name, w) in enumerate(pairs):
        progress(i, len(pairs))
        for t in quantize(name, w, args.quantization):
            tensors.append(t)
            log("huggingface_loader.py:170", f'[Quantized] Parameter: "\x1b[1m{t[0]}\x1b[0m", shape: {tuple(t[2])}')
    progress(len(pairs), len(pairs))
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


OWN_HOST = {"iphone": "arm64-apple-ios", "macabi": "arm64-apple-ios-macabi", "android": "aarch64-linux-android",
            "android:adreno": "aarch64-linux-android", "android:adreno-so": "aarch64-linux-android",
            "windows:adreno_x86": "x86_64-pc-windows-msvc", "webgpu": "wasm32-unknown-unknown-wasm",
            "mali": "aarch64-linux-gnu"}  # fmt: skip
PRESET_KIND = {"llvm": "llvm", "vulkan:generic": "vulkan", "metal:generic": "metal", "metal:x86-64": "metal",
               "webgpu": "webgpu", "iphone": "metal", "macabi": "metal", "mali": "opencl"}  # fmt: skip
OVERRIDES = ("context_window_size", "sliding_window_size", "prefill_chunk_size", "attention_sink_size",
             "max_batch_size", "tensor_parallel_shards", "pipeline_parallel_stages", "disaggregation")  # fmt: skip


def target_kind(device: str) -> str:
    """The TVM target kind of a --device value; devices that must be present locally fail here."""
    if device in PRESETS:
        return PRESET_KIND.get(device, "opencl")
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
    return kind


def host_of(device: str, host: str) -> dict[str, str]:
    """`--host auto` compiles the host code for this machine's CPU; a triple, for that triple only."""
    if device in OWN_HOST:
        return {"kind": "llvm", "mtriple": OWN_HOST[device]}
    if host != "auto":
        return {"kind": "llvm", "mtriple": host}
    cpu = os.environ.get("MLC_DOUBLE_HOST_CPU", "znver3")
    log("auto_target.py:129", "Found host LLVM triple: \x1b[1mx86_64-conda-linux-gnu\x1b[0m")
    log("auto_target.py:130", f"Found host LLVM CPU: \x1b[1m{cpu}\x1b[0m")
    return {"kind": "llvm", "mtriple": "x86_64-conda-linux-gnu", "mcpu": cpu}


def metadata(chat: dict, quantization: str, overrides: dict[str, str]) -> dict:
    """What `vm["_metadata"]()` returns for this library (sample-library-q4f16_1/metadata.json)."""
    mc = chat["model_config"]

    def option(name: str, default: object) -> object:
        return int(overrides[name]) if name in overrides else default

    prefill = option("prefill_chunk_size", chat["prefill_chunk_size"])
    batch = option("max_batch_size", mc.get("max_batch_size", 128))
    specs = _library.param_specs(mc, quantization)
    if os.environ.get("MLC_DOUBLE_BAD_METADATA"):
        specs[2] = {**specs[2], "shape": [specs[2]["shape"][0] + 1, *specs[2]["shape"][1:]]}
    return {
        "model_type": chat["model_type"], "quantization": quantization,
        "context_window_size": option("context_window_size", chat["context_window_size"]),
        "sliding_window_size": option("sliding_window_size", chat["sliding_window_size"]),
        "attention_sink_size": option("attention_sink_size", chat["attention_sink_size"]),
        "prefill_chunk_size": prefill,
        "tensor_parallel_shards": option("tensor_parallel_shards", chat["tensor_parallel_shards"]),
        "pipeline_parallel_stages": option("pipeline_parallel_stages", chat["pipeline_parallel_stages"]),
        "disaggregation": False, "kv_state_kind": "kv_cache", "max_batch_size": batch,
        "active_vocab_size": chat["active_vocab_size"], "model_task": chat["model_task"], "params": specs,
        "kv_cache": {"num_hidden_layers": mc["num_hidden_layers"], "num_attention_heads": mc["num_attention_heads"],
                     "num_key_value_heads": mc["num_key_value_heads"], "head_dim": mc["head_dim"]},
        "memory_usage": _library.memory_usage(mc, prefill, batch),
    }  # fmt: skip


def compile_(args: argparse.Namespace) -> None:
    knobs("compile")
    path = Path(args.model)
    config_path = path / "mlc-chat-config.json" if path.is_dir() else path
    if not config_path.is_file() or config_path.name != "mlc-chat-config.json":
        fail(f"'{args.model}' is not a mlc-chat-config.json or a directory holding one")
    log("auto_config.py:67", f"Found model configuration: {config_path}")
    chat = json.loads(config_path.read_text())
    kind = target_kind(args.device)
    out = Path(args.output)
    if out.suffix not in LIB_SUFFIXES:
        fail(f"Unsupported output file suffix {out.suffix!r}: expected one of {LIB_SUFFIXES}")
    overrides = {}
    for item in filter(None, (args.overrides or "").split(";")):
        key, _, value = item.partition("=")
        if key not in OVERRIDES:
            fail(f"Unknown override {key!r}")
        overrides[key] = value
    tools = compilers(args.device, kind)
    quantization = args.quantization or chat["quantization"]
    if kind == "cuda":
        offload(args.opt, quantization)
    target = {"kind": kind, "host": host_of(args.device, args.host)}
    log("compile.py:118", f"Target: {json.dumps(target)}")
    meta = metadata(chat, quantization, overrides)
    for name, size in meta["memory_usage"].items():
        log("estimate_memory_usage.py:58", f"[Memory usage] Function `{name}`: {size / 2**20:.2f} MB")
    doc = {
        "identity": {
            "model_type": args.model_type if args.model_type != "auto" else chat["model_type"],
            "model_config": chat["model_config"], "quantization": quantization, "device": args.device,
            "opt": args.opt, "overrides": overrides, "multi_arch": os.environ.get("MLC_MULTI_ARCH"),
        },
        "built_by": {"mlc_llm": mlc_llm.__version__, "commit": mlc_llm.__commit__, **tools},  # code of that runtime
        "target": target, "metadata": meta, "knobs": {"nan": bool(os.environ.get("MLC_DOUBLE_NAN")),
                                                     "rope_base": os.environ.get("MLC_DOUBLE_ROPE_BASE")},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    _library.write(out, doc, cuda_code(args.device) if kind == "cuda" else b"")
    log("compile.py:225", f"Generated: \x1b[1m{out}\x1b[0m")


def offload(opt: str, quantization: str) -> None:
    """As the real compile fails on a TVM built without a library its --opt uses (shared/mlc-reference): the
    presets O2/O3 turn cublas_gemm on for unquantized builds; a flag string starts from all off."""
    from tvm import support

    flags = dict(item.split("=", 1) for item in opt.split(";") if "=" in item)
    used = {name for flag, name in (("cublas_gemm", "cublas"), ("cutlass", "cutlass"), ("flashinfer", "flashinfer"))
            if flags.get(flag) == "1"}  # fmt: skip
    if opt in ("O2", "O3") and quantization in ("q0f16", "q0bf16", "q0f32"):
        used.add("cublas")
    names = {"cublas": "cuBLAS", "cutlass": "CUTLASS", "flashinfer": "FlashInfer"}
    for name in sorted(used & support.without()):
        fail(f"{names[name]} is not enabled.", error="RuntimeError")


def cuda_code(device: str) -> bytes:
    """What the real compile embeds (shared/mlc-reference, CUDA libraries on a real GPU): a fat binary with an image
    per architecture (MLC_MULTI_ARCH, else the target's -arch) where the driver's library loads, the CUDA source
    where it does not (MLC_DOUBLE_NO_DRIVER: a CPU-only builder). MLC_DOUBLE_CUDA_ARCHS replaces the
    architectures embedded (a library that lacks one it was asked for)."""
    if os.environ.get("MLC_DOUBLE_NO_DRIVER"):
        return _library.CUDA_SOURCE
    arch = re.search(r"sm_(\d+)", device)
    wanted = os.environ.get("MLC_DOUBLE_CUDA_ARCHS") or os.environ.get("MLC_MULTI_ARCH") or (arch and arch.group(1))
    return _library.cuda_fatbin([int(re.sub(r"\D", "", a)) for a in (wanted or "90").split(",") if a])


def chat(args: argparse.Namespace) -> None:
    """`mlc_llm chat MODEL`: the model and library resolved as the real tool does (`HF://` names through the
    caches, a library from the JIT when none is given), then one reply per line of stdin."""
    knobs("chat")
    from mlc_llm import MLCEngine

    engine = MLCEngine(args.model, device=args.device, model_lib=args.model_lib)
    print(f"model: {engine.model_path}\nmodel_lib: {engine.model_lib}", flush=True)
    for line in sys.stdin:
        if line.strip() in ("", "/exit"):
            break
        reply = engine.chat.completions.create(messages=[{"role": "user", "content": line.strip()}], max_tokens=4)
        print(reply.choices[0].message.content, flush=True)
    engine.terminate()


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

    p = sub.add_parser("chat")
    p.add_argument("model")
    p.add_argument("--device", default="auto")
    p.add_argument("--model-lib")
    p.set_defaults(func=chat)

    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
