"""What a run says on the terminal as it goes and when it ends: how many builds it runs, a line per finished build
above the live status, the summary, the night's use of the pools, each failure with its log, the regressions,
and what it published. The run (mlc_farm/building/run.py) hands it each event; it decides nothing."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from mlc_farm import terminal
from mlc_farm.report.night import NightReport
from mlc_farm.report.status import RunStatus, StatusDisplay
from mlc_farm.report.summary import Summary
from mlc_farm.settings import load_settings


class TerminalReport:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or terminal.console()

    def planned(self, todo: int, reused: int) -> None:
        self.console.print(f"{todo} builds to run, {reused} reused", soft_wrap=True)

    def live(self, status: RunStatus) -> StatusDisplay:
        """The running builds' status, redrawn under the lines of those that finished."""
        return StatusDisplay(self.console, status, load_settings().status_seconds)

    @staticmethod
    def finished(display: StatusDisplay, done: int, of: int, ok: bool, label: str, at: str) -> None:
        mark = ("ok", "green") if ok else ("FAILED", "red")
        display.print(Text.assemble(f"[{done}/{of}] ", mark, f" {label} (at {at})"))

    def ended(self, summary: Summary, night: NightReport) -> None:
        """The summary table (every cell of a small matrix, the failed ones of a big one), the night's use of the
        pools, each failure with its log, and the regressions against the previous toolchain."""
        shown = summary.for_console()
        if shown:
            self.console.print(summary.table(shown, self.console.width))
        if hidden := len(summary.rows) - len(shown):
            self.console.print(
                f"{hidden} ok cells not listed; every cell is in the run's mlc-farm-build-summary artifact",
                soft_wrap=True,
            )
        if night.pools:
            self.console.print(night.line(), soft_wrap=True, markup=False)
        for r in summary.failed:
            detail = f" {r.model}/{r.quantization}/{r.device}: {r.detail}" + (f"\n  log: {r.log}" if r.log else "")
            self.console.print(Text.assemble(("FAILED", "red"), detail), soft_wrap=True)
        if summary.regressions:
            self.console.print("regressions against the previous toolchain:", soft_wrap=True)
            for line in summary.regressions:
                self.console.print(Text(f"  {line}", "yellow"), soft_wrap=True)

    def closed(self) -> None:
        """Everything was printed as it came."""

    def published(self, row: dict[str, str]) -> None:
        """A publish's row (repo, result, detail), as the run's artifact holds it."""
        if row["result"] == "failed":
            self.console.print(Text.assemble(("PUBLISH FAILED", "red"), f" {row['repo']}: {row['detail']}"),
                               soft_wrap=True)  # fmt: skip
        else:
            self.console.print(f"published {row['repo']}: {row['result']} ({row['detail']})", soft_wrap=True)
