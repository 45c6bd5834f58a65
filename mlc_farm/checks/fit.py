"""Does a library fit the weights it ships with: its metadata (read where it was built) against
`tensor-cache.json` and `mlc-chat-config.json`, by the rules of shared/mlc-reference. Pure."""

from __future__ import annotations

from typing import Any

from mlc_farm.checks.results import FitCheck


def fits(metadata: dict[str, Any], tensor_cache: dict[str, Any], chat_config: dict[str, Any]) -> list[str]:
    """Why the library does not fit these weights (empty: it fits).

    Every metadata param needs a tensor-cache record of the same name and dtype, and the same shape once
    symbolic dimensions are read from the config (`model_config` first, then the top level); model type and
    quantization must agree, and the config may not ask for a longer context or prefill chunk than compiled.
    """
    problems = []
    model_config = chat_config.get("model_config", {})
    records = {r["name"]: r for shard in tensor_cache.get("records", []) for r in shard.get("records", [])}
    for param in metadata.get("params", []):
        name, record = param["name"], records.get(param["name"])
        if record is None:
            problems.append(f"{name}: no such tensor in tensor-cache.json")
            continue
        if record["dtype"] != param["dtype"]:
            problems.append(f"{name}: dtype {param['dtype']} in the library, {record['dtype']} in the weights")
        shape = [model_config.get(d, chat_config.get(d, d)) if isinstance(d, str) else d for d in param["shape"]]
        if shape != record["shape"]:
            problems.append(
                f"{name}: shape {param['shape']} -> {shape} in the library, {record['shape']} in the weights"
            )
    for field in ("model_type", "quantization"):
        if metadata.get(field) != chat_config.get(field):
            problems.append(
                f"{field}: {metadata.get(field)!r} in the library, {chat_config.get(field)!r} in the config"
            )
    for field in ("context_window_size", "prefill_chunk_size"):
        built, asked = metadata.get(field), chat_config.get(field)
        if isinstance(built, int) and isinstance(asked, int) and built != -1 and asked > built:
            problems.append(f"{field}: the config asks for {asked}, the library was compiled for {built}")
    return problems


def fit_check(metadata: dict[str, Any] | None, tensor_cache: dict[str, Any], chat_config: dict[str, Any]) -> FitCheck:
    if metadata is None:
        return FitCheck(status="not checked", detail="the library could not be loaded where it was built")
    problems = fits(metadata, tensor_cache, chat_config)
    if not problems:
        return FitCheck(status="passed")
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return FitCheck(status="failed", detail="; ".join(problems[:3]) + more)
