"""Giving builds to their runtimes: `export`, `publish`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import AllowExpiredOpt, MatrixOpt, ModelOpt, Runtime, RuntimeOpt, StoreOpt
from mlc_farm.cli._output import err, out
from mlc_farm.errors import BadInput
from mlc_farm.matrix.cells import select_cells
from mlc_farm.matrix.load import load_matrix
from mlc_farm.matrix.schema import check_names
from mlc_farm.store import open_store
from mlc_farm.terminal import name_columns, printable


@command(app, "export")
def export_configs(
    runtime: Annotated[Runtime, typer.Argument(help="The runtime whose config to print.", show_default=False)],
    model: ModelOpt = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Where `mlc-farm pull` directories are served, for unpublished entries."),
    ] = None,
    built_with: RuntimeOpt = None,
    allow_expired: AllowExpiredOpt = False,
    store: StoreOpt = None,
) -> None:
    """Print the catalog (or --model's entries) as the config a runtime reads: WebLLM model records, app
    entries for iphone/android, or model dirs and libraries for mlc_llm serve / MLCEngine. Every entry is checked
    against the farm's signature first (its integrity hashes are the signed digests)."""
    from mlc_farm.distribute.exports import check_base_url, export
    from mlc_farm.records.reads import entries
    from mlc_farm.trust.entry_signatures import trusted_entry

    if base_url is not None:
        check_base_url(base_url)
    st = open_store(store, must_exist=True)
    listed = [e for e in entries(st) if not model or e.model in model]
    if model and (unknown := sorted(set(model) - {e.model for e in listed})):
        raise BadInput(f"--model: no catalog entry of {', '.join(unknown)} in {st.url} (`mlc-farm ls` lists them)")
    found = [trusted_entry(st, e.model, e.quantization, allow_expired=allow_expired).entry for e in listed]
    print(json.dumps(export(st, found, runtime.value, base_url, built_with), indent=2))


@command(app, "publish")
def publish_cmd(
    model: str,
    quantization: str,
    matrix: MatrixOpt = Path("matrix.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the operations and the card; write nothing.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Publish a built model x quantization to its Hugging Face repo, in one commit (HF_TOKEN)."""
    from mlc_farm.distribute.hub import publish
    from mlc_farm.matrix.repos import repo_for

    check_names(model=model, quantization=quantization)
    loaded = load_matrix(matrix)
    select_cells(loaded.matrix, loaded.file, [model])
    target = repo_for(loaded.matrix, model, quantization)
    if target is None:
        raise BadInput(f"{loaded.file}: publishing is not configured for {model} (add a `publish:` section)")
    result = publish(open_store(store, must_exist=True), model, quantization, *target, dry_run=dry_run)
    if result.note:  # first: what it did not do
        err.print(Text(f"note: {result.note}"))
    t = Table(title=f"{result.repo}: {'would commit' if dry_run else 'commit'}")
    name_columns(t, {"op": [o.op for o in result.operations], "path": [o.path for o in result.operations]})
    t.add_column("size", no_wrap=True, min_width=max((len(str(o.size)) for o in result.operations), default=4))
    widest = max((len(o.path) for o in result.operations), default=0)
    whole = widest + 64 + 4 * 3 + 3 + 10 <= out.width  # op, path, size and a whole sha256 fit the terminal
    t.add_column("sha256" if whole else "sha256 (12)", no_wrap=True)  # its first 12: the manifest has each whole
    for o in result.operations:
        digest = (o.sha256 or "") if whole else (o.sha256 or "")[:12]
        t.add_row(o.op, Text(o.path), "" if o.size is None else str(o.size), digest)
    out.print(t)
    if dry_run:  # the card as it is (markdown) but for control characters: wrapped only on a terminal
        out.print(Text(printable(result.card).rstrip("\n")))
    if result.note:
        return
    if not result.operations:
        out.print(f"{result.repo} is up to date ({result.unchanged} files unchanged): no commit")
    elif result.commit:
        out.print(f"committed {result.commit} to {result.repo}: {len(result.operations)} operations")
