"""`mlc-farm`, in parts: one module per command group (plan, build, catalog, history, pull, publish, farm, tools),
the error table on its own (`_errors.py`), shared options and output. `app` (with every command on it) and
`message_for` are imported on first use: `main` imports them inside its own guard.

May import the foundation modules and `building`, `catalog`, `checks`, `distribute`, `farm`, `flows`, `matrix`,
`planning`, `records`, `report`, `store`, `toolchain`, `trust` (every command: the top; tests/test_structure.py
holds the table).
"""

import sys
from typing import Any

STOPPED_EARLY = "error: stopped by SIGINT before the command began: nothing was touched"


def main() -> None:
    """The `mlc-farm` command. Its modules take about half a second to import, before its stop handlers are
    set: a Ctrl-C then ends like any other stop (exit 130, one line), never with a traceback."""
    try:
        from mlc_farm.cli._main import run
    except KeyboardInterrupt:
        print(STOPPED_EARLY, file=sys.stderr)
        sys.exit(130)
    run()


def __getattr__(name: str) -> Any:
    """`app` and `message_for`, imported when first asked for (tests, the docs' reference)."""
    if name in ("app", "message_for"):
        from mlc_farm.cli import _main

        return getattr(_main, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
