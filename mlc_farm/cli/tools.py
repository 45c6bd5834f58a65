"""`mlc-farm toolchain` and `mlc-farm tiny-model`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._output import out
from mlc_farm.errors import PermanentError
from mlc_farm.toolchain.probe import probe


@command(app, "toolchain")
def show_toolchain(
    expect_commit: Annotated[
        str | None,
        typer.Option("--expect-commit", help="Exit 1 unless mlc_llm reports this commit (an image's own check)."),
    ] = None,
) -> None:
    """Print the mlc_llm/TVM identity this machine would build with, and the compilers beyond the wheel it has
    (emcc, nvcc, Xcode, the NDK, ROCm); exit 1 if mlc_llm is unusable."""
    tc = probe()
    if not tc.known:
        raise PermanentError(f"toolchain unknown: {tc.error}")
    dist = "" if tc.mlc_llm_dist == "unknown" else f" (installed as {tc.mlc_llm_dist})"
    out.print(f"toolchain: {tc.describe()}{dist}", highlight=False, markup=False)
    out.print("can compile with:", highlight=False)
    for line in tc.capabilities.lines():
        out.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if expect_commit and not tc.mlc_llm_commit.startswith(expect_commit):
        raise PermanentError(
            f"mlc_llm reports commit {tc.mlc_llm_commit}, this image's mlc_wasm_runtime.bc was built from "
            f"{expect_commit}: a .wasm would link a runtime of another commit; rebuild the image with "
            "--build-arg MLC_LLM_COMMIT set to the wheel's commit"
        )


@command(app, "tiny-model")
def tiny_model(
    output: Path,
    seed: Annotated[int, typer.Option(min=0, help="Random seed of the weights.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty OUTPUT directory.")] = False,
) -> None:
    """Write a tiny random Llama in Hugging Face format (for examples/tiny-cpu.yaml and tests)."""
    from mlc_farm.output_dir import replacing
    from mlc_farm.tiny_model import write_tiny_llama

    with replacing(output, "OUTPUT", force) as staging:
        write_tiny_llama(staging, seed=seed)
    out.print(f"wrote a tiny Llama to {output}")
