"""The documentation site (issue 39, item 8): `mkdocs build --strict` passes (no broken link or anchor, every
page in the nav), its reference pages hold every command, option, setting and error the code declares, and
README.md stays the front door."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_farm.settings import Settings
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_reference_is_the_codes(site: Path) -> None:
    import typer.main

    from mlc_farm import errors
    from mlc_farm.cli import app

    cli = (site / "reference" / "cli" / "index.html").read_text()
    root = typer.main.get_command(app)
    names = [n for n, c in root.commands.items() if not hasattr(c, "commands")]  # type: ignore[attr-defined]
    assert names and all(f"mlc-farm {name}" in cli for name in names)
    pull = root.commands["pull"]  # type: ignore[attr-defined]
    assert all(opt in cli for p in pull.params for opt in p.opts if opt.startswith("--") and opt != "--help")
    settings = (site / "reference" / "settings" / "index.html").read_text()
    assert all(f"MLC_FARM_{name.upper()}" in settings for name in Settings.model_fields)
    codes = (site / "reference" / "exit-codes" / "index.html").read_text()
    assert all(
        name in codes for name, c in vars(errors).items() if isinstance(c, type) and issubclass(c, errors.FarmError)
    )


def test_the_readme_is_the_front_door() -> None:
    """What it is, the quick start, a tour, where to go next: about 150 lines, each guide it names there."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    for heading in ("## Quick start", "## A five-minute tour", "## Where to go next"):
        assert heading in text
    named = [line.split("`")[-2] for line in text.splitlines() if line.startswith("| ") and "`docs/" in line]
    assert named and all((ROOT / path).exists() for path in named), named
