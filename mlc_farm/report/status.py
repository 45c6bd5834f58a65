"""The live status of a build run: builds done, failed, running (with the phase each is in) and waiting, and
the time since the run started. On a terminal it redraws in place (rich Live) under the lines of finished
builds; elsewhere (CI, a log file) it is printed every MLC_FARM_STATUS_SECONDS."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from mlc_farm.formatting import clock
from mlc_farm.report import activity


class RunStatus:
    def __init__(self, labels: dict[str, str], total: int, now: Callable[[], float] = time.monotonic):
        self.labels, self.total, self.now = labels, total, now
        self.started = now()
        self.running: dict[str, float] = {}  # key -> when it started
        self.spans: dict[str, tuple[float, float]] = {}  # key -> (start, end) since the run started
        self.done = self.failed = 0

    def start(self, key: str) -> None:
        self.running[key] = self.now()

    def finish(self, key: str, ok: bool) -> None:
        if (began := self.running.pop(key, None)) is not None:
            self.spans[key] = (began - self.started, self.now() - self.started)
        self.done += 1
        self.failed += not ok

    def lines(self) -> list[str]:
        """The headline, then one line per running build: its label, its phase and how long it has run."""
        waiting = self.total - self.done - len(self.running)
        failed = f" ({self.failed} failed)" if self.failed else ""
        head = (
            f"[{clock(self.now() - self.started)}] {self.done}/{self.total} builds done{failed}, "
            f"{len(self.running)} running, {waiting} waiting"
        )
        rows = []
        for key, since in sorted(self.running.items(), key=lambda kv: kv[1]):
            here = activity.current(key)
            where = f"{here[0]} {clock(here[1])}, " if here else ""
            rows.append(f"  {self.labels[key]}: {where}running {clock(self.now() - since)}")
        return [head, *rows]


class StatusDisplay:
    """Finished-build lines go above; the status redraws below them (terminal) or is printed now and then."""

    def __init__(self, console: Console, status: RunStatus, every: float):
        self.console, self.status, self.every = console, status, every
        self.live = Live(console=console, auto_refresh=False, transient=True) if console.is_terminal else None
        self.last = status.now()

    def __enter__(self) -> StatusDisplay:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.live.__exit__(None, None, None)

    def print(self, line: str | Text) -> None:
        self.console.print(line, soft_wrap=True, highlight=False)

    def tick(self) -> None:
        if self.live:
            self.live.update(Group(*(Text(line) for line in self.status.lines())), refresh=True)
        elif self.status.now() - self.last >= self.every:
            self.last = self.status.now()
            for line in self.status.lines():
                self.console.print(line, soft_wrap=True, highlight=False, markup=False)
