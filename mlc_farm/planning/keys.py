"""Content keys: a build's key hashes every input that can change its output, and nothing else.

A nightly run rebuilds exactly the builds whose key has no record, so what goes in here decides what a
new MLC nightly or a new model revision recompiles.
"""

from __future__ import annotations

from typing import Any

from mlc_farm.checks import speed
from mlc_farm.digests import digest
from mlc_farm.matrix.schema import DeviceSpec, Overrides
from mlc_farm.toolchain.info import ToolchainInfo, identity

# config.json fields that describe the checkpoint or the tokenizer, not the architecture: two fine-tunes
# that differ only here share a model library.
NON_ARCHITECTURE_FIELDS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "auto_map",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "use_cache",
        "initializer_range",
        "attention_dropout",
        "hidden_dropout",
        "output_attentions",
        "output_hidden_states",
        "return_dict",
        "quantization_config",
    }
)


def across_toolchains(inputs: dict[str, Any]) -> str:
    """The digest of a build's inputs without the toolchain: the same build under every MLC nightly."""
    return digest({k: v for k, v in inputs.items() if k != "toolchain"})


def architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a Hugging Face config.json a compiled library depends on."""
    return {k: v for k, v in config.items() if k not in NON_ARCHITECTURE_FIELDS}


def convert_inputs(
    source: dict[str, Any],
    quantization: str,
    model_type: str | None,
    toolchain: ToolchainInfo,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Inputs of convert_weight: the weights depend on the source, the quantization, the model type and what
    the toolchain's converter does: its conversion fingerprint for this class when known (mlc_farm/planning/twins.py),
    else its identity; not on the conv template or gen_config's options (so editing those never reconverts).
    The convert device is left out: it does not change the output."""
    return {
        "kind": "convert",
        "source": source,
        "quantization": quantization,
        "model_type": model_type,
        "toolchain": {"conversion_fingerprint": fingerprint} if fingerprint else identity(toolchain),
    }


def config_inputs(
    source: dict[str, Any],
    quantization: str,
    conv_template: str,
    overrides: Overrides,
    model_type: str | None,
    toolchain: ToolchainInfo,
) -> dict[str, Any]:
    """Inputs of gen_config: the source's config and tokenizer, the quantization, the conv template and the
    gen_config options (seconds to rebuild)."""
    return {
        "kind": "config",
        "source": source,
        "quantization": quantization,
        "conv_template": conv_template,
        "overrides": dict(overrides.items()),
        "model_type": model_type,
        "toolchain": identity(toolchain),
    }


def library_inputs(
    model: dict[str, Any],
    quantization: str,
    overrides: Overrides,
    device: DeviceSpec,
    toolchain: ToolchainInfo,
    tools: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Inputs of compile: the architecture (not the weights' values), quantization, overrides, target, host,
    and the compilers beyond the wheel that build it (`tools`: emcc, nvcc), when it needs any.

    `model` is the architecture config when known; otherwise the source identity, so that a library is
    never shared on a guess.
    """
    return {
        "kind": "library",
        "model": model,
        "quantization": quantization,
        "overrides": dict(overrides.items()),
        "target": device.target,
        "host": device.host_triple,
        "cuda_archs": sorted(device.cuda_archs),
        "opt": device.opt,
        "lib_ext": device.library_ext,
        "toolchain": identity(toolchain),
        **({"tools": tools} if tools else {}),
    }


def reference_inputs(source: dict[str, Any], eval_set: str, positions: int, method: str, top_k: int) -> dict[str, Any]:
    """Inputs of a fidelity reference: the source and the evaluation, never the toolchain (a float32 pass of
    the source is the same function under every MLC nightly), so it is computed once."""
    return {
        "kind": "reference",
        "source": source,
        "eval_set": eval_set,
        "positions": positions,
        "method": method,
        "top_k": top_k,
    }


def check_inputs(
    library: str,
    convert: str,
    config: str,
    reference: str | None,
    role: str,
    eval_set: str,
    positions: int,
    top_k: int,
    toolchain: ToolchainInfo,
) -> dict[str, Any]:
    """Inputs of a cell's check: its library, weights and config, its reference, the evaluation and how speed is
    measured (the toolchain is in the library's key already; named here for the history of each cell)."""
    return {
        "kind": "check",
        "library": library,
        "convert": convert,
        "config": config,
        "reference": reference,
        "role": role,
        "eval_set": eval_set,
        "positions": positions,
        "top_k": top_k,
        "toolchain": identity(toolchain),
        "speed": speed.PLAN,
    }
