"""`mlc-farm install`: a build where mlc_llm itself finds it (`HF://ORG/NAME`, no download, no compile)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import AllowUnsignedOpt, RuntimeOpt, StoreOpt
from mlc_farm.cli._output import out
from mlc_farm.errors import BadInput
from mlc_farm.matrix.schema import check_names
from mlc_farm.names import shorten
from mlc_farm.store import open_store

if TYPE_CHECKING:
    from mlc_farm.distribute.install import Installed

MAX_DEVICES = 64  # device indices of one machine: more is a typo, and each would be a copy of the library


def _indices(text: str | None) -> list[int] | None:
    """`0,1,2`: plain decimal indices below MAX_DEVICES (int() would read `1_0` as 10)."""
    if text is None:
        return None
    parts = text.split(",")
    if not all(p.strip().isdecimal() and p.strip().isascii() for p in parts) or len(parts) > MAX_DEVICES or any(
            int(p) >= MAX_DEVICES for p in parts):  # fmt: skip
        raise BadInput(f"--device-index {shorten(text)}: give device indices such as 0 or 0,1,2,3 (below "
                       f"{MAX_DEVICES})")  # fmt: skip
    return sorted({int(p) for p in parts})


@command(app, "install")
def install_cmd(
    model: str,
    quantization: str,
    device: Annotated[
        str | None, typer.Option("--device", help="Only this device's library (default: every one this machine runs).")
    ] = None,
    device_index: Annotated[
        str | None,
        typer.Option(
            "--device-index", help="Key the library for these indices, e.g. 0,1 (default: the devices present)."
        ),
    ] = None,
    mlc_home: Annotated[
        str | None,
        typer.Option(
            "--mlc-home",
            help="mlc_llm's cache root (default: $MLC_LLM_HOME, $XDG_CACHE_HOME/mlc_llm, ~/.cache/mlc_llm).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="ORG/NAME of HF://ORG/NAME (default: the Hub repo it is published to, else mlc-farm/MODEL-QUANT-MLC).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace other weights or libraries at those names.")] = False,
    any_runtime: Annotated[
        bool, typer.Option("--any-runtime", help="Install a library built by another mlc_llm/TVM than this one.")
    ] = False,
    built_with: RuntimeOpt = None,
    allow_unsigned: AllowUnsignedOpt = False,
    store: StoreOpt = None,
) -> None:
    """Put a built model where mlc_llm looks for HF://ORG/NAME: its weights in the cache, each library under the
    JIT key the local mlc_llm computes, so `mlc_llm chat|serve HF://ORG/NAME` and MLCEngine use them as they are."""
    from mlc_farm.devices import local_gpu_archs
    from mlc_farm.distribute.install import default_name, install
    from mlc_farm.records.reads import get_entry
    from mlc_farm.toolchain.probe import probe

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    home = _mlc_home(mlc_home)
    indices = _indices(device_index)
    repo = name or default_name(st, get_entry(st, model, quantization))
    done = install(st, model, quantization, home, repo, probe(), device, indices, force, any_runtime,
                   local_gpu_archs(), built_with, allow_unsigned)  # fmt: skip
    _report(done, repo)


def _mlc_home(mlc_home: str | None) -> Path:
    """--mlc-home, else mlc_llm's own default: a directory, never an empty path or a file."""
    from mlc_farm.toolchain import jit

    if mlc_home is None:
        return jit.mlc_llm_home()
    if not mlc_home.strip() or (Path(mlc_home).exists() and not Path(mlc_home).is_dir()):
        raise BadInput(f"--mlc-home {shorten(mlc_home)}: give a directory (MLC_LLM_HOME), not "
                       f"{'an empty path' if not mlc_home.strip() else 'a file'}")  # fmt: skip
    return Path(mlc_home)


def _report(done: Installed, repo: str) -> None:
    for name, why in sorted(done.not_here.items()):
        out.print(f"not installed: {escape(name)}'s library ({escape(why)})")
    for what in done.replaced:
        out.print(f"replaced {escape(what)}")
    if not done.weights_written and not done.written:
        out.print(f"already installed: HF://{escape(repo)} ({escape(str(done.weights))}), nothing changed")
        return
    out.print(f"weights: {escape(str(done.weights))}" + ("" if done.weights_written else " (already there)"))
    for dev, path in sorted(done.libraries.items()):
        there = "" if dev in done.written else " (already there)"
        out.print(f"library for {dev}: {escape(str(path))} ({escape(done.chosen[dev])}'s){there}")
    out.print(f"run it: mlc_llm chat HF://{escape(repo)} --device {escape(next(iter(sorted(done.libraries))))}")
