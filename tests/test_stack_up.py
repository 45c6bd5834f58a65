"""`farm up`'s start (mlc_farm/farm/stack.py `up`): SeaweedFS starts while Prefect's server sets up its database,
and a start that fails leaves nothing running, the server it did not wait for included."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlc_farm.farm import stack
from tests.helpers import alive

pytestmark = pytest.mark.slow


def _started_from(directory: Path) -> list[int]:
    """Live processes of the stack in `directory`: PostgreSQL on its cluster, a Prefect server on its home."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        ours = str(stack.postgres_root(directory / "postgres")).encode() in cmdline or (
            f"PREFECT_HOME={directory / 'prefect'}".encode() in environ.split(b"\0")
        )
        if ours and alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def test_a_failed_start_stops_what_it_started(tmp_path: Path) -> None:
    directory = tmp_path / "farm"
    directory.mkdir()
    (directory / "seaweedfs").write_text("a file where SeaweedFS's data would go")  # its start fails
    try:
        with pytest.raises(FileExistsError):
            stack.up(directory, ["mlc-cpu"], "key", "secret", {})
        assert _started_from(directory) == []
        assert not (directory / "stack.json").exists()
    finally:
        stack.remove_data(directory)
