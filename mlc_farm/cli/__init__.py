"""`mlc-farm`, in parts: one module per command group (plan, build, catalog, history, pull, publish, farm, tools),
the error table on its own (`_errors.py`), shared options and output. Importing this package registers every
command on `app`.

May import the foundation modules and `building`, `catalog`, `checks`, `distribute`, `farm`, `flows`, `matrix`,
`planning`, `records`, `report`, `store`, `toolchain`, `trust` (every command: the top; tests/test_structure.py
holds the table).
"""

from mlc_farm.cli import build, catalog, farm, history, install, plan, publish, pull, tools  # noqa: F401  (registers the commands)
from mlc_farm.cli._app import app
from mlc_farm.cli._errors import message_for

__all__ = ["app", "message_for"]
