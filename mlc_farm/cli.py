"""`mlc-farm`: plan, build, ls, pull, verify. Bad input exits 2 with a message naming file, field, value."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import click
import typer
from rich.table import Table
from rich.text import Text

from mlc_farm import plan as planning
from mlc_farm import sources, stopping, toolchain
from mlc_farm.catalog import load_record
from mlc_farm.errors import BadInput, FarmError, MatrixError, PermanentError, StoreError, redact_urls
from mlc_farm.matrix import (
    BUILTIN_NAMES,
    Accepted,
    LoadedMatrix,
    check_names,
    load_matrix,
    select_cells,
    shorten,
    toolchain_problems,
)
from mlc_farm.settings import load_settings
from mlc_farm.status import size
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.store.layout import blob_path
from mlc_farm.store.local import LocalStore
from mlc_farm.terminal import console

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__, pretty_exceptions_enable=False)
out = console()
err = console(stderr=True)
_debug = False


def _cannot_reach(service: str, hint: str) -> Callable[[BaseException], str]:
    return lambda e: f"cannot reach {service}: {e}. {hint}"


_signalled: list[int] = []  # the stop signals this process received


def _http_unreachable(e: BaseException) -> str:
    """An HTTP service (the Prefect API, the Hub) that did not answer, named by the address asked."""
    try:
        asked = str(e.request.url).split("?", 1)[0]  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        asked = "a service"
    return (
        f"cannot reach {asked} ({type(e).__name__}): check PREFECT_API_URL (the Prefect API; unset, `mlc-farm "
        "build` runs its own) or HF_ENDPOINT (the Hub), and the network"
    )


def _terminated(signum: int, _frame: object) -> None:
    from prefect.exceptions import TerminationSignal

    _signalled.append(signum)
    toolchain.stop_all()
    raise TerminationSignal(signal=signum)


def _interrupted(signum: int, frame: FrameType | None) -> None:
    _signalled.append(signum)
    stopping.request()  # waits and retries in other threads end now, not at their next timeout
    signal.default_int_handler(signum, frame)


def _stopped(name: str) -> str:
    return (
        f"stopped by {name}: what finished is kept and nothing half-written is left (running toolchain steps "
        "were killed); running the same command again does the rest"
    )


def _errors() -> list[tuple[tuple[type[BaseException], ...], int, Callable[[BaseException], str]]]:
    """The one table from an error to what a person reads and the exit code (see mlc_farm.errors)."""
    import httpx
    from prefect.exceptions import TerminationSignal

    # The store and the Hub map their clients' errors to ours at their boundary; the Prefect API's client is
    # httpx, met here.
    return [
        ((FarmError,), 0, str),  # 0: the error's own exit_code
        ((httpx.TransportError,), 3, _http_unreachable),
        ((ConnectionError, TimeoutError), 3, _cannot_reach("a service", "Check the network and the endpoint settings")),
        ((PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError), 2,
         lambda e: f"cannot use {getattr(e, 'filename', '') or 'a path'}: {getattr(e, 'strerror', '') or e}"),
        ((OSError,), 1, lambda e: f"{getattr(e, 'filename', '') or 'I/O error'}: {getattr(e, 'strerror', '') or e}"),
        ((TerminationSignal,), 128 + signal.SIGTERM, lambda e: _stopped("SIGTERM")),
        ((KeyboardInterrupt,), 128 + signal.SIGINT, lambda e: _stopped("SIGINT")),
    ]  # fmt: skip


def explain(error: BaseException) -> tuple[int, str]:
    """(exit code, message) for an error; anything unforeseen is a bug: say so, and how to report it."""
    for kinds, code, message in _errors():
        if isinstance(error, kinds):
            return code or getattr(error, "exit_code", 1), redact_urls(message(error))
    return 1, redact_urls(
        f"internal error: {type(error).__name__}: {error}. Rerun with --debug and report the traceback."
    )


def _handled(f: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; an error becomes one message and its exit code (the traceback only with --debug)."""

    @functools.wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except BaseException as e:
            if _debug or isinstance(e, SystemExit):
                raise
            code, message = explain(e)
            err.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
            if _signalled:
                # Stopped: what this command wrote is cleaned up by now; threads still blocked in a read or a
                # retry must not hold the exit (the interpreter would join them).
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            raise typer.Exit(code) from None

    return run


def command(typer_app: typer.Typer, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`@typer_app.command(...)`, with errors explained by the one table."""
    return lambda f: typer_app.command(*args, **kwargs)(_handled(f))


class _Warnings(logging.Handler):
    """mlc-farm's own warnings (a damaged store document, a rebuilt build) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(Text.assemble(("warning:", "yellow"), f" {redact_urls(record.getMessage())}"), soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"mlc-farm {version('mlc-farm')}", highlight=False)
        raise typer.Exit()


@app.callback()
@_handled
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (for bug reports).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Read and check every MLC_FARM_* setting once, before the command runs."""
    global _debug
    _debug = debug
    logger = logging.getLogger("mlc_farm")
    logger.handlers[:] = [_Warnings(level=logging.WARNING)]
    logger.propagate = False  # not through the handlers Prefect installs on the root logger
    load_settings()
    signal.signal(signal.SIGTERM, _terminated)  # every command stops within seconds of SIGTERM or Ctrl-C
    signal.signal(signal.SIGINT, _interrupted)


MatrixOpt = Annotated[Path, typer.Option("--matrix", "-m", help="The matrix file.")]
StoreOpt = Annotated[
    str | None,
    typer.Option("--store", help="file://DIR or s3://bucket/prefix (default: $MLC_FARM_STORE or ./artifacts)."),
]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", help="Only this model (repeatable).")]


def _fail(message: str, code: int) -> typer.Exit:
    err.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def _bytes_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of bytes on stderr (gone once done); yields `progress(done, total)`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    columns = (what, BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@contextlib.contextmanager
def _prefect_api() -> Iterator[None]:
    """PREFECT_API_URL when it is set; else a temporary server of our own for this build, stopped after it."""
    import os
    import tempfile

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mlc_farm.stack import start_temporary_prefect

    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="mlc-farm-prefect-") as logs:
        server = start_temporary_prefect(Path(logs))
        try:
            with temporary_settings({PREFECT_API_URL: server.url}):
                yield
                # Logs and events still queued go to the server before it stops, not into errors at exit.
                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
        finally:
            server.stop(timeout=10)


def _quiet_engine() -> None:
    """Prefect's own console lines (task states, tracebacks of failed tasks, the toolchain's output) stay in
    the Prefect log (UI, API); the console gets the build's progress and summary from the flow itself."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for handler in (h for lg in loggers for h in getattr(lg, "handlers", [])):
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.CRITICAL + 1)


def _check_names(loaded: LoadedMatrix, tc: toolchain.ToolchainInfo, st: ArtifactStore) -> Accepted:
    """Names the installed toolchain would reject are bad input, found before anything runs; without one, the
    names of the newest toolchain probed into the store, else the built-in list."""
    accepted = tc.names or toolchain.names_snapshot(st) or BUILTIN_NAMES
    if problems := toolchain_problems(loaded.matrix, accepted):
        raise MatrixError(loaded.file, [*problems, f"(names checked against {accepted.source})"])
    return accepted


@command(app)
def plan(
    matrix: MatrixOpt = Path("matrix.yaml"),
    model: ModelOpt = None,
    store: StoreOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json")] = "table",
    explain: Annotated[
        bool, typer.Option("--explain", help="For every build to do, what differs from the closest stored build.")
    ] = False,
) -> None:
    """Show the builds a matrix needs, what they share, and how many the store already has."""
    loaded = load_matrix(matrix)
    cells = select_cells(loaded.matrix, loaded.file, model)
    st = open_store(store)
    tc = toolchain.probe()
    accepted = _check_names(loaded, tc, st)
    wanted = {c.model for c in cells}
    srcs = sources.resolve(loaded, [m for m in loaded.matrix.models if m.id in wanted])
    p = planning.make_plan(loaded.matrix, cells, srcs, tc)
    # With an unknown toolchain the keys that hold it are not the keys a build would have: the store is not asked.
    in_store: dict[str, bool | None] = {k: (load_record(st, k) is not None) if tc.known else None for k in p.all_keys()}
    kinds: dict[str, dict[str, Any]] = {"convert": p.convert_builds, "config": p.config_builds, "library": p.lib_builds}
    counts: dict[str, int] = {"cells": len(p.cells), "unresolved_cells": sum(pc.problem is not None for pc in p.cells)}
    for kind, builds in kinds.items():
        counts[f"{kind}_builds"] = len(builds)
        counts[f"{kind}_builds_in_store"] = sum(bool(in_store[k]) for k in builds)
    counts["libraries_shared"] = sum(len(lb.users) - 1 for lb in p.lib_builds.values())
    if fmt == "json":
        doc: dict[str, Any] = {
            "matrix": loaded.file,
            "store": st.url,
            "toolchain": {**tc.model_dump(exclude={"names"}), "known": tc.known},
            "names_checked_against": accepted.source,
            "counts": counts,
            "sources": {k: v.model_dump(exclude={"config"}) for k, v in srcs.items()},
            **{
                f"{kind}_builds": [
                    {"key": b.key, "model": b.model, "quantization": b.quantization, "in_store": in_store[b.key]}
                    for b in builds.values()
                ]
                for kind, builds in (("convert", p.convert_builds), ("config", p.config_builds))
            },
            "library_builds": [
                {
                    "key": lb.key,
                    "quantization": lb.quantization,
                    "device": lb.device.name,
                    "target": lb.device.target,
                    "host": lb.device.host_triple,
                    "pool": lb.device.work_pool,
                    "sources": [b.model_dump() for b in lb.sources],
                    "cells": [c.model_dump() for c in lb.users],
                    "in_store": in_store[lb.key],
                }
                for lb in p.lib_builds.values()
            ],
            "cells": [pc.model_dump() for pc in p.cells],
        }
        print(json.dumps(doc, indent=2))
        return
    if fmt != "table":
        raise BadInput(f"--format: unknown format {fmt!r}; expected 'table' or 'json'")
    out.print(f"toolchain: {tc.describe()}; names checked against {accepted.source}", highlight=False, soft_wrap=True)
    t = Table(title=f"plan for {loaded.file}")
    for col in ("model", "quant", "device", "pool", "convert", "config", "library"):
        t.add_column(col)

    def show(key: str | None) -> Text:
        if key is None:
            return Text("-")
        if in_store[key] is None:
            return Text.assemble(f"{key[:12]} ", ("unknown", "yellow"))
        return Text.assemble(f"{key[:12]} ", ("in store", "cyan") if in_store[key] else ("to build", "yellow"))

    for pc in p.cells:
        c = pc.cell
        pool = loaded.matrix.device(c.device).work_pool
        if pc.problem:
            t.add_row(c.model, c.quantization, c.device, pool, Text("unresolved", "red"), "-", "-")
        else:
            t.add_row(c.model, c.quantization, c.device, pool, show(pc.convert), show(pc.config), show(pc.library))
    out.print(t)
    for src in srcs.values():
        if src.error:
            out.print(Text.assemble(("unresolved source", "red"), f" {src.model}: {src.error}"), soft_wrap=True)
    stored = (lambda k: f"{counts[f'{k}_builds_in_store']} in store") if tc.known else (lambda k: "store not asked")
    out.print(
        f"{counts['cells']} cells -> "
        + ", ".join(f"{counts[f'{k}_builds']} {k} builds ({stored(k)})" for k in kinds)
        + f"; {counts['libraries_shared']} cells reuse a library built for another model of the same architecture"
    )
    if not tc.known:
        out.print(
            f"the toolchain is unknown ({tc.error}): every key holds the toolchain's identity, so these keys are "
            "not the ones a build would have and what the store has cannot be told; fix MLC_FARM_MLC_LLM "
            "(`mlc-farm toolchain` says what is wrong)"
        )
    if explain and tc.known:
        _explain(st, p, {k: bool(v) for k, v in in_store.items()})


def _explain(st: ArtifactStore, p: planning.Plan, in_store: dict[str, bool]) -> None:
    """Why each build is to do: what differs from the closest build in the store."""
    from mlc_farm.catalog import all_records
    from mlc_farm.explain import explain

    records = [r for _, r in all_records(st)]
    builds: list[tuple[str, str, dict]] = [
        *((f"convert {b.model}/{b.quantization}", k, b.inputs) for k, b in p.convert_builds.items()),
        *((f"config {b.model}/{b.quantization}", k, b.inputs) for k, b in p.config_builds.items()),
        *((f"library {b.device.name}/{b.quantization}", k, b.inputs) for k, b in p.lib_builds.items()),
    ]
    todo = [(label, key, inputs) for label, key, inputs in builds if not in_store[key]]
    out.print(f"\nwhy {len(todo)} builds are to do:" if todo else "\nnothing to do: every build is in the store")
    for label, key, inputs in todo:
        why = explain(key, inputs, records)
        than = f" (compared with {why.closest[:12]}, built {why.built_at})" if why.closest else ""
        out.print(f"{label} {key[:12]}{than}:", highlight=False, soft_wrap=True)
        for change in why.changes:
            out.print(f"  {change}", highlight=False, soft_wrap=True, markup=False)


@command(app)
def build(
    matrix: MatrixOpt = Path("matrix.yaml"),
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even what the store has.")] = False,
    store: StoreOpt = None,
) -> None:
    """Build the matrix locally: the nightly flow in this process, with Prefect's temporary server."""
    loaded = load_matrix(matrix)
    select_cells(loaded.matrix, loaded.file, model)
    if isinstance(st := open_store(store), LocalStore):
        st.check_writable()
    tc = toolchain.probe()
    if tc.known:
        _check_names(loaded, tc, st)
    import os

    # Prefect's temporary server: a generous start on a loaded 2-core worker, and no telemetry from it.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect import tags

    from flows.nightly import hub_unreachable, nightly_build, stopped_by
    from flows.runs import crash_dead_runs, run_tags

    _quiet_engine()
    signal.signal(signal.SIGTERM, _terminated)  # Prefect's engine hands SIGTERM back to this once it unwound
    with _prefect_api():
        if crashed := crash_dead_runs():
            out.print(f"marked {crashed} flow runs of killed builds Crashed in Prefect", highlight=False)
        with tags(*run_tags()):
            state = nightly_build(str(matrix), models=model or None, force=force, store=store, return_state=True)
    if signum := stopped_by(state):
        raise _fail(state.message or "stopped", 128 + signum)
    if not state.is_completed():
        raise _fail(state.message or "the build failed", 3 if hub_unreachable(state) else 1)
    out.print(Text.assemble(("done:", "green"), f" {state.message}"), soft_wrap=True)


@command(app, "ls")
def list_catalog(store: StoreOpt = None) -> None:
    """List the catalog: model, quantization, each device's library and its validation, sizes, build time."""
    from mlc_farm.catalog import entries

    st = open_store(store, must_exist=True)
    found = entries(st)
    t = Table(title="catalog")
    for col in ("model", "quant", "devices", "weight files", "libraries", "built"):
        t.add_column(col)
    checks = []
    for e in found:
        weights = load_record(st, e.convert)
        t.add_row(
            e.model,
            e.quantization,
            ", ".join(sorted(e.libs)) or "-",
            size(weights.size if weights else 0),
            size(sum(ref.file.size for ref in e.libs.values())),
            weights.finished_at.isoformat(timespec="seconds") if weights else "missing",
        )
        checks += [
            f"  {e.model} {e.quantization} {d}: {ref.validation.describe()}"
            + (f"; needs {ref.memory.describe()}" if ref.memory else "")
            for d, ref in sorted(e.libs.items())
        ]
        checks += [f"  {e.model} {e.quantization} {d}: no validated library yet" for d in e.missing]
    out.print(t)
    if checks:
        out.print("validation (fit to the weights; run where the device was present):", highlight=False)
        for line in checks:
            out.print(line, highlight=False, soft_wrap=True)


@command(app)
def pull(
    model: str,
    quantization: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write.")],
    device: Annotated[str | None, typer.Option("--device", help="Only this device's library.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output directory.")] = False,
    store: StoreOpt = None,
) -> None:
    """Write an MLC-ready directory (config, weights, tokenizer, libs/), every file checked by sha256."""
    from mlc_farm.pull import pull as do_pull

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    with _bytes_bar("downloading, every sha256 checked") as progress:
        files = do_pull(st, model, quantization, output, device, replace=force, progress=progress)
    out.print(f"wrote {len(files)} files to {output}, every sha256 verified")


@command(app)
def verify(
    deep: Annotated[bool, typer.Option("--deep", help="Also re-hash every blob (reads the whole store).")] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="With --deep: delete bad blobs, so the next build rebuilds what used them.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Check that every catalog entry and build record points at blobs that exist; --deep re-hashes them."""
    from mlc_farm.catalog import deep_verify
    from mlc_farm.catalog import verify as do_verify

    if repair and not deep:
        raise BadInput("--repair needs --deep")
    st = open_store(store, must_exist=True)
    problems = do_verify(st)
    for p in problems:
        err.print(p, highlight=False, soft_wrap=True)
    bad = []
    if deep:
        with _bytes_bar("re-hashing blobs") as progress:
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


@command(app)
def validate(
    model: str,
    quantization: str,
    device: Annotated[str | None, typer.Option("--device", help="Only this device's library.")] = None,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="A directory `mlc-farm pull` wrote (default: pull into a temporary one)."),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Check a built model again: files against the catalog, each library's fit to the weights, and a run
    with the weights where its device is on this machine. Exit 1 if anything fails."""
    import tempfile

    from mlc_farm.pull import pull as do_pull
    from mlc_farm.validate import validate_pulled

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    with tempfile.TemporaryDirectory(prefix="mlc-farm-validate-") as tmp:
        where = directory
        if where is None:
            where = Path(tmp)
            do_pull(st, model, quantization, where, device)
        results = validate_pulled(st, model, quantization, where, device)
    t = Table(title=f"{model} {quantization}: validation")
    for col in ("device", "fits the weights", "run", "tokens/s", "peak memory"):
        t.add_column(col)
    for name, v in results.items():
        run = v.run.status + (f": {v.run.detail}" if v.run.detail else "")
        speed = f"{v.run.tokens_per_s:.1f}" if v.run.tokens_per_s else "-"
        memory = size(v.run.peak_memory_bytes) if v.run.peak_memory_bytes else "-"
        t.add_row(name, v.fits.status + (f": {v.fits.detail}" if v.fits.detail else ""), run, speed, memory)
    out.print(t)
    if not all(v.ok for v in results.values()):
        raise typer.Exit(1)


@command(app)
def url(
    model: str,
    quantization: str,
    device: Annotated[str | None, typer.Option("--device", help="Only this device's library.")] = None,
    expires: Annotated[int, typer.Option(help="Seconds the links stay valid.")] = 3600,
    store: StoreOpt = None,
) -> None:
    """Print presigned download URLs (S3 store) for people without credentials: `path url` per line."""
    from mlc_farm.pull import pull_files
    from mlc_farm.store.s3 import S3Store

    check_names(model=model, quantization=quantization, device=device)
    st = open_store(store, must_exist=True)
    if not isinstance(st, S3Store):
        raise StoreError(f"{st.url}: presigned URLs need an S3 store (s3://bucket/prefix)")
    for rel, f in pull_files(st, model, quantization, device).items():
        print(f"{rel}\t{f.size}\t{f.sha256}\t{st.presigned_url(blob_path(f.sha256), expires)}")
    err.print(f"links expire in {expires} s; check each file's sha256 after download")


@command(app)
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go.")] = False,
    min_age_hours: Annotated[float, typer.Option(help="Keep anything younger (builds in flight).")] = 24.0,
    store: StoreOpt = None,
) -> None:
    """Remove blobs no build record points at, and uploads that killed runs left unfinished."""
    from datetime import timedelta

    from mlc_farm.gc import collect

    if not 0 <= min_age_hours < float("inf"):
        raise BadInput(f"--min-age-hours: {min_age_hours} is not a number of hours (0 or more)")
    report = collect(open_store(store, must_exist=True), timedelta(hours=min_age_hours), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for name in [*report.blobs, *report.uploads, *report.failures]:
        out.print(f"{verb} {name}", highlight=False)
    out.print(
        f"{verb} {len(report.blobs)} unreferenced blobs ({size(report.bytes)}), "
        f"{len(report.uploads)} unfinished uploads and {len(report.failures)} failure records of keys built since"
    )


@command(app, "export")
def export_configs(
    runtime: Annotated[str, typer.Argument(help="webllm, app or mlc-serve", show_default=False)],
    model: ModelOpt = None,
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Where `mlc-farm pull` directories are served, for unpublished entries."),
    ] = None,
    store: StoreOpt = None,
) -> None:
    """Print the catalog (or --model's entries) as the config a runtime reads: WebLLM model records, app
    entries for iphone/android, or model dirs and libraries for mlc_llm serve / MLCEngine."""
    from mlc_farm.catalog import entries
    from mlc_farm.exports import check_base_url, export

    if runtime not in ("webllm", "app", "mlc-serve"):
        raise BadInput(f"RUNTIME {shorten(runtime)}: expected webllm, app or mlc-serve")
    if base_url is not None:
        check_base_url(base_url)
    st = open_store(store, must_exist=True)
    found = [e for e in entries(st) if not model or e.model in model]
    if model and (unknown := sorted(set(model) - {e.model for e in found})):
        raise BadInput(f"--model: no catalog entry of {', '.join(unknown)} in {st.url} (`mlc-farm ls` lists them)")
    print(json.dumps(export(st, found, runtime, base_url), indent=2))  # type: ignore[arg-type]


@command(app, "page")
def catalog_page_cmd(store: StoreOpt = None) -> None:
    """Write the catalog page (index.html + catalog.json) at the store's root; every build does it too."""
    from mlc_farm.catalog_page import PAGE, write_page

    st = open_store(store, must_exist=True)
    out.print(f"wrote {st.url}/{PAGE}: {write_page(st)}", soft_wrap=True)


@command(app, "log")
def show_log(
    target: Annotated[list[str], typer.Argument(metavar="KEY | MODEL QUANT [DEVICE]", show_default=False)],
    store: StoreOpt = None,
) -> None:
    """Print build logs: of a key (its first 6+ characters), or of a cell: its failures not built since, then
    the logs of the builds its catalog entry serves (weights, config, the device's library)."""
    import sys
    import tempfile

    from mlc_farm.logs import by_cell, by_key

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
            sys.stdout.write(("\n" if i else "") + f"=== {f.header}\n")
            if f.log is None:
                sys.stdout.write("(no log was kept)\n")
                continue
            path = Path(tmp) / f"{i}.log"
            st.get_blob(f.log.sha256, path)
            sys.stdout.write(path.read_text(errors="replace"))
    sys.stdout.flush()


@command(app)
def publish(
    model: str,
    quantization: str,
    matrix: MatrixOpt = Path("matrix.yaml"),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the operations and the card; write nothing.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """Publish a built model x quantization to its Hugging Face repo, in one commit (HF_TOKEN)."""
    from mlc_farm.hub import publish as do_publish
    from mlc_farm.hub import repo_for

    check_names(model=model, quantization=quantization)
    loaded = load_matrix(matrix)
    select_cells(loaded.matrix, loaded.file, [model])
    target = repo_for(loaded.matrix, model, quantization)
    if target is None:
        raise BadInput(f"{loaded.file}: publishing is not configured for {model} (add a `publish:` section)")
    result = do_publish(open_store(store, must_exist=True), model, quantization, *target, dry_run=dry_run)
    t = Table(title=f"{result.repo}: {'would commit' if dry_run else 'commit'}")
    for col in ("op", "path", "size", "sha256"):
        t.add_column(col)
    for o in result.operations:
        t.add_row(o.op, o.path, "" if o.size is None else str(o.size), o.sha256 or "")
    out.print(t)
    if dry_run:
        sys.stdout.write(result.card if result.card.endswith("\n") else result.card + "\n")  # as it is: markdown
    if result.note:
        err.print(f"note: {result.note}", soft_wrap=True)
        return
    if not result.operations:
        out.print(f"{result.repo} is up to date ({result.unchanged} files unchanged): no commit")
    elif result.commit:
        out.print(f"committed {result.commit} to {result.repo}: {len(result.operations)} operations")


farm_app = typer.Typer(no_args_is_help=True, help="Farm mode: work pools, limits, and a local stack.")
app.add_typer(farm_app, name="farm")


@command(farm_app, "init")
def farm_init(
    matrix: MatrixOpt = Path("matrix.yaml"),
    pool_type: Annotated[str, typer.Option("--type", help="process, docker or kubernetes")] = "process",
    gpus: Annotated[int, typer.Option(help="Compiles at once per pool (one per GPU).")] = 1,
    pool_limit: Annotated[int | None, typer.Option(help="Flow runs at once per pool.")] = None,
) -> None:
    """Create or update the work pools of the matrix and their concurrency limits (idempotent; PREFECT_API_URL)."""
    from mlc_farm.farm import init

    loaded = load_matrix(matrix)
    for line in init(loaded.matrix, pool_type, gpus, pool_limit):
        out.print(line, highlight=False)


@command(farm_app, "up")
def farm_up(
    directory: Annotated[Path, typer.Option("--dir", help="State of the stack (databases, logs, PIDs).")] = Path(
        ".farm"
    ),
    matrix: MatrixOpt = Path("matrix.yaml"),
) -> None:
    """Start PostgreSQL, a Prefect server, SeaweedFS and a process worker per pool on 127.0.0.1 (no Docker).
    Idempotent: a stack already running from DIR is reused; one whose processes died is started again on its
    data."""
    import os
    import secrets

    from mlc_farm import stack
    from mlc_farm.farm import pools_of

    pools = sorted(pools_of(load_matrix(matrix).matrix))
    use = f"use it: source {directory}/env.sh; mlc-farm farm init; prefect --no-prompt deploy --all"
    if (directory / "stack.json").exists():
        running = stack.LocalStack.load(directory)
        if running.alive():
            out.print(
                f"stack already up from {directory}: Prefect API {running.api_url}, S3 {running.s3_endpoint}",
                highlight=False,
                soft_wrap=True,
            )
            out.print(use, highlight=False, soft_wrap=True)
            return
        out.print(f"the stack of {directory} has stopped services: starting it again on its data", soft_wrap=True)
        running.stop()
    before = _exports(directory / "env.sh")  # data kept by `farm down --keep-data` keeps its keys
    key = os.environ.get("AWS_ACCESS_KEY_ID") or before.get("AWS_ACCESS_KEY_ID", "mlc-farm")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or before.get("AWS_SECRET_ACCESS_KEY") or secrets.token_hex(16)
    bucket = "mlc-farm"
    env = {"MLC_FARM_STORE": f"s3://{bucket}/artifacts", "MLC_FARM_HOME": str(Path.cwd())}
    running = stack.up(directory, pools, key, secret, env)
    import boto3

    s3 = boto3.client("s3", endpoint_url=running.s3_endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")  # fmt: skip
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    env_sh = directory / "env.sh"
    env_sh.touch(mode=0o600)
    env_sh.chmod(0o600)  # before the secret goes in
    env_sh.write_text("".join(f"export {k}={v}\n" for k, v in (running.env(key, secret) | env).items()))
    out.print(
        f"stack up: Prefect API {running.api_url}, S3 {running.s3_endpoint}, workers for {', '.join(pools)}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(use, highlight=False, soft_wrap=True)


def _exports(env_sh: Path) -> dict[str, str]:
    """The `export K=V` lines of an env.sh that `farm up` wrote."""
    if not env_sh.is_file():
        return {}
    lines = (line.removeprefix("export ") for line in env_sh.read_text().splitlines() if line.startswith("export "))
    return dict(line.split("=", 1) for line in lines if "=" in line)


@command(farm_app, "down")
def farm_down(
    directory: Annotated[Path, typer.Option("--dir", help="The directory given to `farm up`.")] = Path(".farm"),
    keep_data: Annotated[
        bool, typer.Option("--keep-data", help="Keep the databases, the S3 data and env.sh for the next `farm up`.")
    ] = False,
) -> None:
    """Stop what `farm up` started and delete its data: the PostgreSQL database (the Prefect history), the S3
    data (every artifact built into it) and env.sh; --keep-data keeps them for the next `farm up`."""
    from mlc_farm import stack

    if not (directory / "stack.json").exists():
        raise BadInput(f"no stack is running from {directory}")
    stack.LocalStack.load(directory).stop()
    if keep_data:
        out.print(
            f"stack stopped; its data stays in {directory} for the next `mlc-farm farm up --dir {directory}`",
            soft_wrap=True,
        )
        return
    removed = stack.remove_data(directory)
    out.print(f"stack stopped; deleted its data ({', '.join(str(p) for p in removed)})", soft_wrap=True)


@command(app, "toolchain")
def show_toolchain() -> None:
    """Print the mlc_llm/TVM identity this machine would build with; exit 1 if mlc_llm is unusable."""
    tc = toolchain.probe()
    if not tc.known:
        raise PermanentError(f"toolchain unknown: {tc.error}")
    out.print(f"toolchain: {tc.describe()} [{tc.mlc_llm_dist}]", highlight=False, markup=False)


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


if __name__ == "__main__":
    app()
