"""What the CLI prints to: its consoles, its warnings, errors and byte progress bars."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import typer
from rich.text import Text

from mlc_farm.errors import redact_urls
from mlc_farm.terminal import console

out = console()
err = console(stderr=True)


class Warnings(logging.Handler):
    """mlc-farm's own warnings (a damaged store document, a rebuilt build) as one line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(Text.assemble(("warning:", "yellow"), f" {redact_urls(record.getMessage())}"), soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    err.print(Text.assemble(("error:", "red"), f" {message}"), soft_wrap=True)
    return typer.Exit(code)


@contextlib.contextmanager
def bytes_bar(what: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of bytes on stderr (gone once done); yields `progress(done, total)`."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    if not err.is_terminal:  # a log or a pipe: no bar (rich would leave an empty line where it was)
        yield lambda done, total: None
        return
    columns = (what, BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def quiet_prefect() -> None:
    """Prefect's own console lines (task states, tracebacks of failed tasks, the toolchain's output) stay in
    the Prefect log (UI, API); the console gets the command's own answer (a build's progress and summary, a pool
    check's report)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for handler in (h for lg in loggers for h in getattr(lg, "handlers", [])):
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.CRITICAL + 1)
