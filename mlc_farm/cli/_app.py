"""The typer app and its callback: every MLC_FARM_* setting read once, signals set, before a command runs."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

from mlc_farm.cli._errors import handled, interrupted, show_tracebacks, terminated
from mlc_farm.cli._output import Warnings, out
from mlc_farm.settings import export_settings_file, load_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="`mlc-farm`: plan, build, ls, pull, verify. Bad input exits 2 with a message naming file, field, value.",
    pretty_exceptions_enable=False,
)
farm_app = typer.Typer(no_args_is_help=True, help="Farm mode: work pools, limits, and a local stack.")
app.add_typer(farm_app, name="farm")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"mlc-farm {version('mlc-farm')}", highlight=False)
        raise typer.Exit()


@app.callback()
@handled
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error (for bug reports).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Read and check every MLC_FARM_* setting once, before the command runs."""
    show_tracebacks(debug)
    logger = logging.getLogger("mlc_farm")
    logger.handlers[:] = [Warnings(level=logging.WARNING)]
    logger.propagate = False  # not through the handlers Prefect installs on the root logger
    export_settings_file()
    load_settings()
    signal.signal(signal.SIGTERM, terminated)  # every command stops within seconds of SIGTERM or Ctrl-C
    signal.signal(signal.SIGINT, interrupted)
