"""The consoles mlc-farm prints to: nothing printed is read as rich markup or emoji codes (names, URLs and
errors are data), and output that is not a terminal (logs, CI, a pipe) is never wrapped or cut to 80
columns: a table is as wide as its content, so a name or an error stays whole and on one line."""

from __future__ import annotations

import os

from rich.console import Console

UNWRAPPED = 10_000  # the width of output that is not a terminal, unless COLUMNS says otherwise


def console(stderr: bool = False) -> Console:
    made = Console(stderr=stderr, markup=False, highlight=False, emoji=False)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = UNWRAPPED
    return made
