"""Double of `mlc_llm.support.download_cache`: where an `HF://USER/REPO` model is found (shared/mlc-reference).
A miss would clone the repo from the Hub; this double has no network, so it says so and fails (or, with
MLC_DOWNLOAD_CACHE_POLICY=READONLY, fails as the real one does)."""

from __future__ import annotations

from pathlib import Path

from mlc_llm.support import constants


def get_or_download_model(model: str) -> Path:
    if not model.startswith("HF://"):
        return Path(model)
    user_repo = model[len("HF://") :]
    for base in constants.MLC_LLM_READONLY_WEIGHT_CACHE:
        if (base / "hf" / user_repo / "mlc-chat-config.json").is_file():
            return base / "hf" / user_repo
    cached = constants.MLC_LLM_HOME / "model_weights" / "hf" / user_repo
    if cached.exists() and constants.MLC_DOWNLOAD_CACHE_POLICY != "REDO":
        return cached
    if constants.MLC_DOWNLOAD_CACHE_POLICY in ("READONLY", "OFF"):
        raise RuntimeError(
            f"{model} is not in the cache ({cached}) and MLC_DOWNLOAD_CACHE_POLICY="
            f"{constants.MLC_DOWNLOAD_CACHE_POLICY} does not allow downloading it"
        )
    raise RuntimeError(f"would clone https://huggingface.co/{user_repo} into {cached} (this double has no network)")
