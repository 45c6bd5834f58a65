"""`mlc-farm` as a command: its modules and every command on `app`, imported by `main` (mlc_farm/cli/__init__.py),
so that a stop while they import is not a traceback."""

import sys

import typer

from mlc_farm.cli import build, catalog, farm, history, install, plan, publish, pull, tools  # noqa: F401  (registers the commands)
from mlc_farm.cli._app import app
from mlc_farm.cli._errors import message_for
from mlc_farm.cli._output import fail

__all__ = ["app", "message_for", "run"]


def run() -> None:
    """The `mlc-farm` command: a usage error (an unknown option, a value typer refuses) in the one-line style
    of every other error, with the help to read, instead of typer's boxed panel."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as e:  # typer's click errors: usage, a bad value, no arguments
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # type: ignore[attr-defined]  # click's: the help
        else:
            ctx = getattr(e, "ctx", None)
            hint = f" (`{ctx.command_path} --help`)" if ctx is not None else ""
            fail(f"{e.format_message()}{hint}", e.exit_code)
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(fail("aborted", 1).exit_code)
    sys.exit(code if isinstance(code, int) else 0)
