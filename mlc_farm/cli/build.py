"""`mlc-farm build`: the nightly flow in this process, on Prefect's temporary server, once its plan has work."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlc_farm.building.preflight import Preflight
from mlc_farm.building.run import RunResult
from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command, terminated
from mlc_farm.cli._options import MatrixOpt, ModelOpt, StoreOpt
from mlc_farm.cli._output import err, fail, out, quiet_prefect
from mlc_farm.farm.stack import Service
from mlc_farm.toolchain.probe import probe_here
from mlc_farm.toolchain.process import stop_all


@contextlib.contextmanager
def _prefect_api() -> Iterator[None]:
    """PREFECT_API_URL when it is set; else a temporary server of our own for this build, stopped after it."""
    import tempfile

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from mlc_farm.farm.stack import start_temporary_prefect

    if os.environ.get("PREFECT_API_URL"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="mlc-farm-prefect-") as logs:
        server = start_temporary_prefect(Path(logs))
        watching = _watch(server)
        try:
            # No flow-run heartbeats: nothing watches this server's runs for them (a killed build's run is marked
            # Crashed by the next build), and Prefect's heartbeat thread, sleeping in steps of a second, held each
            # flow run's end for up to one (an empty flow run: 1.13 s with them, 0.16 s without).
            with temporary_settings({PREFECT_API_URL: server.url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                yield
                # Logs and events still queued go to the server before it stops, not into errors at exit.
                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
        finally:
            watching.set()
            server.stop(timeout=10)


def _watch(server: Service, every: float = 1.0) -> threading.Event:
    """Notice within seconds that the build's temporary Prefect server died (killed, out of memory): Prefect's
    client would retry its calls for minutes while the status line went on. Say so and where its log is, stop
    the toolchain steps, exit 3 at once, as a killed build would: what finished is in the store, and the same
    command finishes the rest. Set the returned event to stop watching."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(every):
            if not server.alive():
                stop_all()
                err.print(
                    Text.assemble(
                        ("error:", "red"),
                        f" Prefect's temporary server stopped (its log: {server.log}); "
                        "the running toolchain steps were stopped. What finished is kept in the store: run the same "
                        "command again to finish the rest",
                    ),
                    soft_wrap=True,
                )
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(3)

    threading.Thread(target=watch, daemon=True, name="prefect server watch").start()
    return stop


@command(app)
def build(
    matrix: MatrixOpt = Path("matrix.yaml"),
    model: ModelOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even what the store has.")] = False,
    store: StoreOpt = None,
) -> None:
    """Build the matrix locally: the nightly flow in this process, with Prefect's temporary server; with nothing to
    build, at the cost of its plan, without Prefect."""
    from mlc_farm.building.preflight import preflight

    # The run's pre-flight, once, before Prefect starts: the flow is handed it instead of making another.
    pre = preflight(str(matrix), model or None, None, None, store, lambda st, pools: probe_here(pools))
    if (done := _without_prefect(pre, force)) is not None:
        _ended(done)
        return

    # Prefect's temporary server: a generous start on a loaded 2-core worker, and no telemetry from it.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect import tags

    from mlc_farm.flows.nightly import nightly_build, run_result
    from mlc_farm.flows.runs import crash_dead_runs, run_tags

    quiet_prefect()
    signal.signal(signal.SIGTERM, terminated)  # Prefect's engine hands SIGTERM back to this once it unwound
    with _prefect_api():
        if crashed := crash_dead_runs():
            out.print(f"marked {crashed} flow runs of killed builds Crashed in Prefect", highlight=False)
        with tags(*run_tags()):
            state = nightly_build(
                str(matrix), models=model or None, force=force, store=store, checked=pre, return_state=True
            )
    _ended(run_result(state))


def _without_prefect(pre: Preflight, force: bool) -> RunResult | None:
    """The run, when its plan has nothing to build: its catalog, publishing and page, in this process (no
    Prefect server, at about the cost of `mlc-farm plan`). None when there are builds to run."""
    from mlc_farm.building.run import MatrixRun, Progress
    from mlc_farm.cli._direct import DirectEngine

    silent = logging.getLogger("mlc_farm.build.direct")  # what the flow would log to Prefect: said in the result
    silent.addHandler(logging.NullHandler())
    silent.propagate = False
    run = MatrixRun(pre, DirectEngine(pre), force, Progress(), silent)
    work = run.prepare()
    return None if work.todo else run.complete(work)


def _ended(ended: RunResult) -> None:
    if ended.signal:
        raise fail(ended.message, 128 + signal.Signals[ended.signal])
    if not ended.ok:
        raise fail(ended.message, 3 if ended.reason == "hub unreachable" else 1)
    out.print(Text.assemble(("done:", "green"), f" {ended.message}"), soft_wrap=True)
