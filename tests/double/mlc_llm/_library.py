"""What the double's compile writes and its TVM runtime reads: the parameter layout of a Llama per
quantization (the same formulas convert_weight packs with) and the library file itself.

A library file is an ELF-looking header followed by one JSON document: the compile inputs, the Relax VM
metadata the real `vm["_metadata"]()` returns (see sample-library-q4f16_1/metadata.json), the target with
its host, and test knobs that were set at compile time.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from mlc_llm.quantization import scheme

MAGIC = b"\x7fELF\x02\x01\x01MLC-DOUBLE\n"
GROUP = 32


def layout(quantization: str) -> tuple[int, str, str]:
    """(bits, model dtype, scale dtype) of a quantization."""
    bits, dtype = scheme(quantization)
    return bits, dtype, "float16" if dtype == "float16" else "float32"


def packed_shape(out_dim: int, in_dim: int, bits: int) -> tuple[list[int], list[int]]:
    """Shapes of (q_weight, q_scale) of a group-quantized [out, in] matrix: uint32 words and one scale per group."""
    per_word = 32 // bits
    return [out_dim, math.ceil(in_dim / per_word)], [out_dim, in_dim // GROUP]


def linear_shapes(mc: dict[str, Any]) -> list[tuple[str, int | str, int]]:
    """(name, out, in) of every matrix, in the runtime's parameter order; `vocab_size` stays symbolic."""
    h, inter, head_dim = mc["hidden_size"], mc["intermediate_size"], mc["head_dim"]
    q, kv = mc["num_attention_heads"] * head_dim, mc["num_key_value_heads"] * head_dim
    out: list[tuple[str, int | str, int]] = [("model.embed_tokens", "vocab_size", h)]
    for i in range(mc["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.qkv_proj", q + 2 * kv, h), (p + "self_attn.o_proj", h, q),
                (p + "mlp.gate_up_proj", 2 * inter, h), (p + "mlp.down_proj", h, inter)]  # fmt: skip
    return out


def param_specs(mc: dict[str, Any], quantization: str) -> list[dict[str, Any]]:
    """The `params` of the library metadata: {name, shape, dtype, preprocs, pipeline_stages}."""
    bits, dtype, scale_dtype = layout(quantization)
    h = mc["hidden_size"]
    specs: list[dict[str, Any]] = []

    def add(name: str, shape: list, dt: str) -> None:
        specs.append({"name": name, "shape": shape, "dtype": dt, "preprocs": [], "pipeline_stages": [0]})

    def matrix(base: str, out_dim: int | str, in_dim: int) -> None:
        if bits >= 16:
            add(base + ".weight", [out_dim, in_dim], dtype)
            return
        qw, qs = packed_shape(1, in_dim, bits)
        add(base + ".q_weight", [out_dim, qw[1]], "uint32")
        add(base + ".q_scale", [out_dim, qs[1]], scale_dtype)

    linears = linear_shapes(mc)
    matrix(*linears[0])
    for layer in range(mc["num_hidden_layers"]):
        for base, out_dim, in_dim in linears[1 + 4 * layer : 5 + 4 * layer]:
            matrix(base, out_dim, in_dim)
        add(f"model.layers.{layer}.input_layernorm.weight", [h], dtype)
        add(f"model.layers.{layer}.post_attention_layernorm.weight", [h], dtype)
    add("model.norm.weight", [h], dtype)
    if not mc.get("tie_word_embeddings"):
        matrix("lm_head", "vocab_size", h)
    return specs


def memory_usage(mc: dict[str, Any], prefill: int, max_batch: int) -> dict[str, int]:
    """Bytes of temporary memory per function, proportional to the chunk and batch sizes like the real ones."""
    h, inter, vocab = mc["hidden_size"], mc["intermediate_size"], mc["vocab_size"]
    per_token = 4 * (2 * inter + h)
    return {
        "alloc_embedding_tensor": prefill * h * 2, "batch_decode": max_batch * per_token // 2,
        "batch_decode_to_last_hidden_states": max_batch * per_token // 2 + max_batch * h * 2,
        "batch_prefill": prefill * per_token, "batch_prefill_to_last_hidden_states": prefill * (per_token + 2 * h),
        "batch_select_last_hidden_states": max_batch * h * 2, "batch_verify": prefill * per_token,
        "batch_verify_to_last_hidden_states": prefill * (per_token + 2 * h), "create_tir_paged_kv_cache": 0,
        "decode": per_token + 4 * vocab, "decode_to_last_hidden_states": per_token + 2 * h,
        "embed": prefill * h * 2, "gather_hidden_states": 0, "get_logits": 0,
        "prefill": prefill * per_token + 256, "prefill_to_last_hidden_states": prefill * (per_token + 2 * h),
        "scatter_hidden_states": 0, "softmax_with_temperature": 0,
    }  # fmt: skip


def write(path: Path, doc: dict[str, Any], device_code: bytes = b"") -> None:
    body = json.dumps(doc).encode()  # key order kept: the metadata lists keys as the real library does
    path.write_bytes(MAGIC + body + b"\n" + bytes(math.ceil(len(body) / 64) * 64) + device_code)


def cuda_fatbin(archs: list[int]) -> bytes:
    """A fat binary as the reference describes it: magic 0xBA55ED50, version, header size, fat size, then one
    image per architecture, an ELF64 header with e_machine 190 (EM_CUDA) and the SM in bits 8-15 of e_flags."""
    images = b""
    for sm in archs:
        elf = bytearray(64)
        elf[0:7] = b"\x7fELF\x02\x01\x01"
        struct.pack_into("<HHI", elf, 16, 2, 190, 1)  # e_type ET_EXEC, e_machine EM_CUDA, e_version
        struct.pack_into("<I", elf, 48, 0x6000004 | (sm << 8))  # e_flags: 0x6005a04 for sm_90
        images += bytes(elf) + bytes(192)  # the image's sections, as padding
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(images)) + images


CUDA_SOURCE = (
    b'#include <cuda_fp16.h>\nextern "C" __global__ void __launch_bounds__(256) fused_matmul_kernel(half* A) {}\n'
)


def read(path: str | Path) -> dict[str, Any]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise ValueError(f"cannot load module {path}: not a library this runtime can load")
    return json.loads(data[len(MAGIC) :].split(b"\n", 1)[0])
