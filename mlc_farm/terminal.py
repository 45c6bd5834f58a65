"""The consoles mlc-farm prints to: nothing printed is read as rich markup or emoji codes (names, URLs and
errors are data), no control character in what is printed reaches the terminal (a name or a log from the store
holding `ESC[2J` or an OSC 52 clipboard write is text to show, not to obey), and output that is not a terminal
(logs, CI, a pipe) is never wrapped or cut to 80 columns: a table is as wide as its content, so a name or an
error stays whole and on one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.table import Table

UNWRAPPED = 10_000  # the width of output that is not a terminal, unless COLUMNS says otherwise
# C0 controls but tab and newline, DEL, and the C1 controls (U+0080-U+009F: CSI and OSC among them).
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F, *range(0x80, 0xA0)])


def printable(text: str) -> str:
    """`text` without the control characters a terminal would act on (tab and newline are kept)."""
    return text.translate(_CONTROLS)


class _Console(Console):
    """A rich console whose text segments are made printable; its own control segments (cursor moves of a
    progress bar) pass as they are."""

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            yield segment if segment.control else Segment(printable(segment.text), segment.style)

    def on_broken_pipe(self) -> None:
        """The reader went away (`| head -1`): a quiet exit, 0 (rich's own says 1, which reads as a failure)."""
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(0)


def console(stderr: bool = False) -> Console:
    made = _Console(stderr=stderr, markup=False, highlight=False, emoji=False)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = UNWRAPPED
    return made


def name_columns(table: Table, names: dict[str, list[str]]) -> None:
    """Columns of names a reader tells cells apart by (model ids, quantizations, devices, pools): never cut nor
    wrapped, at any width (80 columns included); the table's other columns give way first (they fold)."""
    for column, values in names.items():
        table.add_column(column, no_wrap=True, min_width=max([len(column), *(len(v) for v in values)]))
