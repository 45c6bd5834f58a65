"""Reading and keeping the store: `ls`, `verify`, `resign`, `gc`, `page`, `log`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import StoreOpt
from mlc_farm.cli._output import bytes_bar, err, out
from mlc_farm.errors import BadInput
from mlc_farm.formatting import size
from mlc_farm.matrix.schema import check_names
from mlc_farm.records.reads import load_record
from mlc_farm.records.schema import CatalogEntry
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.store.layout import blob_path
from mlc_farm.terminal import name_columns, printable


@command(app, "ls")
def list_catalog(store: StoreOpt = None) -> None:
    """List the catalog: model, quantization, each device's library and its validation, sizes, build time."""
    from mlc_farm.records.reads import entries

    st = open_store(store, must_exist=True)
    found = entries(st)
    rows = [_listed(st, e) for e in found]
    if out.width >= WIDE:
        t = Table(title="catalog")
        name_columns(t, {"model": [e.model for e in found], "quant": [e.quantization for e in found]})
        for col in ("devices", "runtimes", "weight files", "libraries", "built"):
            t.add_column(col, overflow="fold")
        for e, row in zip(found, rows, strict=True):
            t.add_row(e.model, e.quantization, *row)
        out.print(t)
    else:  # a narrow terminal: an entry a line, wrapped between words, never through one
        for e, (devices, _, weights, libraries, built) in zip(found, rows, strict=True):
            out.print(f"{e.model} {e.quantization}: {devices}; weights {weights}, libraries {libraries}, built {built}",
                      highlight=False)  # fmt: skip
    checks = [line for e in found for line in _checks(e)]
    if checks:
        out.print("validation (fit to the weights; run and fidelity where the device was present):", highlight=False)
        for line in checks:
            out.print(line, highlight=False, soft_wrap=out.width >= WIDE)


WIDE = 120  # columns from which `ls` shows a table; below it, lines that wrap between words


def _listed(st: ArtifactStore, e: CatalogEntry) -> tuple[str, str, str, str, str]:
    """An entry's devices, runtimes, weight and library sizes and build time, as `ls` shows them."""
    weights = load_record(st, e.convert)
    return (
        ", ".join(sorted(e.libs)) or "-",
        "; ".join(sorted({ref.runtime.describe() for ref in e.libs.values() if ref.runtime})) or "-",
        size(weights.size if weights else 0),
        size(sum(ref.file.size for ref in e.libs.values())),
        weights.finished_at.isoformat(timespec="minutes").replace("T", " ") if weights else "missing",
    )


def _checks(e: CatalogEntry) -> list[str]:
    """A line per device of the entry: its validation, runtime, memory and fidelity."""
    lines = [
        f"  {e.model} {e.quantization} {d}: {ref.validation.describe()}"
        + (f"; built with {ref.runtime.describe()}" if ref.runtime else "")
        + (f"; needs {ref.memory.describe()}" if ref.memory else "")
        + (f"; {ref.fidelity.describe()}" if ref.fidelity else "")
        for d, ref in sorted(e.libs.items())
    ]
    return lines + [f"  {e.model} {e.quantization} {d}: no validated library yet" for d in e.missing]


@command(app, "verify")
def verify_cmd(
    deep: Annotated[bool, typer.Option("--deep", help="Also re-hash every blob (reads the whole store).")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="With --deep: delete bad blobs, so the next build rebuilds what used them.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Check that every catalog entry and build record points at blobs that exist, that every entry's signature
    holds as a pull checks it (not missing, failing, expired or stale) and every record carries its build's
    attestation; --deep re-hashes every blob. Exit 1 on any problem."""
    from mlc_farm.catalog.verify import deep_verify, verify

    if repair and not deep:
        raise BadInput("--repair needs --deep")
    st = open_store(store, must_exist=True)
    problems = verify(st)
    for p in problems:
        err.print(p, highlight=False, soft_wrap=True)
    bad = []
    if deep:
        with bytes_bar("re-hashing blobs") as progress:
            bad = deep_verify(st, progress=progress)
        for b in bad:
            err.print(f"blob {b.sha256} is {b.problem}", highlight=False, soft_wrap=True)
            for name in b.builds:
                err.print(f"  used by build {name}", highlight=False, soft_wrap=True)
            for name in b.entries:
                err.print(f"  served by {name}", highlight=False, soft_wrap=True)
            if repair and b.problem != "missing":
                st.delete(blob_path(b.sha256))
                err.print("  deleted: the next build rebuilds what used it", highlight=False)
    if problems or bad:
        raise typer.Exit(1)
    out.print("store is consistent" + (", every blob re-hashed" if deep else ""))


@command(app, "resign")
def resign_cmd(
    adopt: Annotated[
        bool,
        typer.Option(
            "--adopt",
            help="Trust the store as it is now: attest every record from before attestations whose blobs hash as "
            "it says (each blob is read again), and sign its unsigned entries too.",
        ),
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Sign every catalog entry again with the current signing key, from its builds' attestations that verify
    with a trusted key (after rotating the key; the nightly does it for its matrix). Exit 1 if any is left."""
    from mlc_farm.catalog.resign import adopt as adopt_records
    from mlc_farm.catalog.resign import resign
    from mlc_farm.trust import keys

    st, key, trusted = open_store(store, must_exist=True), keys.signing_key(), keys.trusted_keys()
    if adopt:
        err.print("--adopt: every record without an attestation is taken as the store holds it now", highlight=False)
    lines = [*(adopt_records(st, key, trusted) if adopt else []), *resign(st, key, trusted, adopt)]
    for line in lines:
        out.print(printable(line), highlight=False, soft_wrap=True)
    if any(line.startswith("left ") for line in lines):
        raise typer.Exit(1)


MAX_AGE_HOURS = 24 * 366 * 10  # beyond it nothing is younger, and timedelta would overflow


@command(app)
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    min_age_hours: Annotated[float, typer.Option(help="Keep anything younger (builds in flight).")] = 24.0,
    store: StoreOpt = None,
) -> None:
    """Remove blobs no build record points at, and uploads that killed runs left unfinished."""
    from datetime import timedelta

    from mlc_farm.catalog.gc import collect

    if not 0 <= min_age_hours <= MAX_AGE_HOURS:
        raise BadInput(
            f"--min-age-hours: {min_age_hours:g} is not a number of hours from 0 to {MAX_AGE_HOURS:g} (ten years)"
        )
    report = collect(open_store(store, must_exist=True), timedelta(hours=min_age_hours), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for name in [*report.blobs, *report.uploads, *report.failures, *report.staging]:
        out.print(f"{verb} {name}", highlight=False)
    out.print(
        f"{verb} {len(report.blobs)} unreferenced blobs ({size(report.bytes)}), "
        f"{len(report.uploads)} unfinished uploads, {len(report.failures)} failure records of keys built since "
        f"and {len(report.staging)} staging directories of killed pulls"
    )


@command(app, "page")
def catalog_page_cmd(store: StoreOpt = None) -> None:
    """Write the catalog page (index.html + catalog.json) at the store's root; every build does it too."""
    from mlc_farm.report.catalog_page import PAGE, write_page

    st = open_store(store, must_exist=True)
    out.print(f"wrote {st.url}/{PAGE}: {write_page(st)}", soft_wrap=True)


@command(app, "log")
def show_log(
    target: Annotated[list[str], typer.Argument(metavar="KEY | MODEL QUANT [DEVICE]", show_default=False)],
    store: StoreOpt = None,
) -> None:
    """Print build logs: of a key (its first 6+ characters), or of a cell: its failures not built since, then
    the logs of the builds its catalog entry serves (weights, config, the device's library)."""
    import tempfile

    from mlc_farm.catalog.logs import by_cell, by_key

    if len(target) in (2, 3):
        check_names(model=target[0], quantization=target[1], device=target[2] if len(target) == 3 else None)
    elif len(target) != 1:
        raise BadInput(f"expected KEY or MODEL QUANT [DEVICE], got {len(target)} arguments")
    st = open_store(store, must_exist=True)
    if len(target) == 1:
        found = [by_key(st, target[0])]
    else:
        found = by_cell(st, target[0], target[1], target[2] if len(target) == 3 else None)
    with tempfile.TemporaryDirectory(prefix="mlc-farm-log-") as tmp:
        for i, f in enumerate(found):
            # A log and its header are the store's bytes: printable, never a terminal's orders (escapes, OSC 52).
            sys.stdout.write(("\n" if i else "") + f"=== {printable(f.header)}\n")
            if f.log is None:
                sys.stdout.write("(no log was kept)\n")
                continue
            path = Path(tmp) / f"{i}.log"
            st.get_blob(f.log.sha256, path, size=f.log.size)
            sys.stdout.write(printable(path.read_text(errors="replace")))
    sys.stdout.flush()
