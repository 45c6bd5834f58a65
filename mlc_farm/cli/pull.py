"""Getting a build out of the store: `pull`, `url`, `validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import AllowExpiredOpt, AllowUnsignedOpt, RuntimeOpt, StoreOpt
from mlc_farm.cli._output import bytes_bar, err, out
from mlc_farm.errors import BadInput
from mlc_farm.formatting import size
from mlc_farm.matrix.schema import check_names
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.store.layout import blob_path


@command(app, "pull")
def pull_cmd(
    model: str,
    quantization: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    device: Annotated[str | None, typer.Option("--device", help="Only this device's library.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory.")] = False,
    check_runtime: Annotated[
        bool,
        typer.Option("--check-runtime", help="First check that the local mlc_llm/TVM can load the libraries."),
    ] = False,
    built_with: RuntimeOpt = None,
    allow_unsigned: AllowUnsignedOpt = False,
    allow_expired: AllowExpiredOpt = False,
    store: StoreOpt = None,
) -> None:
    """Write an MLC-ready directory (config, weights, tokenizer, libs/, the farm's model.sig), every file checked
    against the farm's signature and by sha256."""
    from mlc_farm.distribute.pull import pull

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    if check_runtime:
        _refuse_mismatched(st, model, quantization, device, built_with)
    with bytes_bar("downloading, every sha256 checked") as progress:
        files = pull(
            st,
            model,
            quantization,
            output,
            device,
            built_with,
            replace=force,
            progress=progress,
            allow_unsigned=allow_unsigned,
            allow_expired=allow_expired,
        )
    out.print(f"wrote {len(files)} files to {output}, every sha256 verified")


def _refuse_mismatched(
    st: ArtifactStore,
    model: str,
    quantization: str,
    device: str | None,
    built_with: str | None = None,
    runnable_only: bool = False,
) -> None:
    """Exit 1 in one line, before anything is loaded, when the local runtime cannot load a library (of
    `device`, or every one; `runnable_only`: those whose device is on this machine, which validation runs)."""
    from mlc_farm.checks import runtime
    from mlc_farm.devices import local_gpu_archs, runs_here
    from mlc_farm.records.reads import get_entry
    from mlc_farm.toolchain.probe import probe

    entry = get_entry(st, model, quantization)
    libs = {d: ref.runtime for d, ref in entry.libs.items() if device in (None, d)}
    if built_with is not None:
        libs = {d: libs[d] for d in runtime.built_with(libs, built_with, f"{model} {quantization}")}
    if runnable_only:
        libs = {d: r for d, r in libs.items() if runs_here(entry.libs[d].target)}
    if libs:
        runtime.refuse_mismatched(libs, probe(), local_gpu_archs())


@command(app, "validate")
def validate_cmd(
    model: str,
    quantization: str,
    device: Annotated[str | None, typer.Option("--device", help="Only this device's library.")] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="A directory `mlc-farm pull` wrote (default: pull into a temporary one)."),
    ] = None,
    allow_unsigned: AllowUnsignedOpt = False,
    allow_expired: AllowExpiredOpt = False,
    store: StoreOpt = None,
) -> None:
    """Check a built model again: its files (pulled now, or in --dir) against the farm's signature, each library's
    fit to the weights, and a run with the weights where its device is on this machine. Exit 1 if anything fails."""
    import tempfile

    from mlc_farm.distribute.pull import pull
    from mlc_farm.distribute.revalidate import validate_pulled
    from mlc_farm.trust.entry_signatures import trusted_files

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    _refuse_mismatched(st, model, quantization, device, runnable_only=True)
    found, files = trusted_files(st, model, quantization, device, None, allow_unsigned, allow_expired)
    with tempfile.TemporaryDirectory(prefix="mlc-farm-validate-") as tmp:
        where = directory
        if where is None:
            where = Path(tmp)
            pull(st, model, quantization, where, device, allow_unsigned=allow_unsigned, allow_expired=allow_expired)
        results = validate_pulled(st, found, files, where, device)
    t = Table(title=f"{model} {quantization}: validation")
    for col in ("device", "fits the weights", "run", "tokens/s", "peak memory", "fidelity"):
        t.add_column(col, overflow="fold")
    for name, (v, fid) in results.items():
        run = v.run.status + (f": {v.run.detail}" if v.run.detail else "")
        speed = f"{v.run.tokens_per_s:.1f}" if v.run.tokens_per_s else "-"
        memory = size(v.run.peak_memory_bytes) if v.run.peak_memory_bytes else "-"
        shown = fid.describe().removeprefix("fidelity ") if fid else "not measured (built before fidelity)"
        fits = v.fits.status + (f": {v.fits.detail}" if v.fits.detail else "")
        t.add_row(*(Text(x) for x in (name, fits, run, speed, memory, shown)))
    out.print(t)
    if not all(v.ok and (fid is None or fid.status != "failed") for v, fid in results.values()):
        raise typer.Exit(1)


@command(app)
def url(
    model: str,
    quantization: str,
    device: Annotated[str | None, typer.Option("--device", help="Only this device's library.")] = None,
    expires: Annotated[
        int, typer.Option(help="Seconds the links stay valid: 1 to 604800 (7 days, S3's longest).", min=1, max=604800)
    ] = 3600,
    allow_expired: AllowExpiredOpt = False,
    store: StoreOpt = None,
) -> None:
    """Print presigned download URLs (S3 store) for people without credentials: one line per file, `path`, size,
    sha256 and URL separated by tabs; each file one the farm signed for this entry."""
    from mlc_farm.trust.entry_signatures import trusted_files

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    st.presigned_url("catalog.json", 1)  # a store without links says so before anything is read
    _, files = trusted_files(st, model, quantization, device, allow_expired=allow_expired)
    for rel, f in files.items():
        print(f"{rel}\t{f.size}\t{f.sha256}\t{st.presigned_url(blob_path(f.sha256), expires)}")
    err.print(f"links expire in {expires} s; check each file's sha256 after download")


@command(app, "verify-signature")
def verify_signature_cmd(
    directory: Annotated[Path, typer.Argument(help="A folder downloaded by any means (pull, huggingface-cli, ...).")],
) -> None:
    """Check a folder against its model.sig: every file as the farm signed it, none added, signed by a trusted key
    (MLC_FARM_TRUSTED_KEYS), none missing but other devices' libraries (a one-device pull: named). Exit 1 if not."""
    from mlc_farm.records.folder import LIB_DIR
    from mlc_farm.trust.keys import trusted_keys
    from mlc_farm.trust.signatures import check, folder_files, read_signature

    if not directory.is_dir():
        raise BadInput(f"{directory} is not a directory")
    found, signed = read_signature(directory, trusted_keys())
    here = folder_files(directory)
    libraries = {p for p in signed if p.startswith(f"{LIB_DIR}/")}
    check(here, {p: h for p, h in signed.items() if p not in libraries or p in here}, str(directory), whole=True)
    out.print(f"{directory}: {len(here)} files, each as the farm signed it ({found.key[:19]}...)")
    if absent := sorted(libraries - set(here)):
        out.print(f"signed libraries not here (a one-device pull holds only its own): {', '.join(absent)}")


@command(app, "provenance")
def provenance_cmd(
    model: str,
    quantization: str,
    device: Annotated[str | None, typer.Argument(help="Only this device's library (default: every one).")] = None,
    bundle: Annotated[
        bool, typer.Option("--bundle", help="Print the signed Sigstore bundle, not the statement.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Print the signed provenance of a build (an in-toto statement, SLSA provenance v1): every file of its pull
    with its sha256, the source and its commit, the matrix options, the toolchain, the conversion fingerprint, and
    the worker image, host and flow run of each build. The files are checked against the farm's signature and the
    statement against the farm's signature of it first; DEVICE shows only the files and builds of that library."""
    from mlc_farm.records.folder import lib_path
    from mlc_farm.trust.entry_signatures import signed_provenance, trusted_entry

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    found = trusted_entry(st, model, quantization)
    entry = found.entry
    if device is not None and device not in entry.libs:
        raise BadInput(f"{model} {quantization} has no library for device {device!r}; built: {', '.join(entry.libs)}")
    checked, signed = signed_provenance(st, found)
    if device is not None:  # a view of the signed statement: the shared files, that library, its builds
        other = {lib_path(entry, d) for d in entry.libs if d != device}
        checked["subject"] = [s for s in checked["subject"] if s["name"] not in other]
        keep = {"convert", "config", f"library {device}"}
        runs = checked["predicate"]["runDetails"]
        runs["byproducts"] = [b for b in runs["byproducts"] if b["name"].rsplit(" ", 1)[0] in keep]
    print(json.dumps(signed, sort_keys=True) if bundle else json.dumps(checked, indent=2))
