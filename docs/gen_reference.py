"""Write the reference pages from the code when the site is built (mkdocs-gen-files): every command and option
from the typer app, every setting from the settings model, every exit code from the error classes. Nothing
here is written by hand, so nothing here can drift from what the code does."""

from __future__ import annotations

import inspect
from pathlib import Path

import mkdocs_gen_files
import typer.main

from mlc_farm import errors
from mlc_farm.cli import app
from mlc_farm.settings import settings_table

INCLUDES = Path(__file__).parent / "_includes"


def cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def commands(group: typer.main.TyperGroup, prefix: str) -> list[tuple[str, object]]:
    """(full name, click command) of every command, groups walked."""
    found = []
    for name, command in sorted(group.commands.items()):
        if getattr(command, "hidden", False):
            continue
        if hasattr(command, "commands"):
            found += commands(command, f"{prefix} {name}")
        else:
            found.append((f"{prefix} {name}", command))
    return found


def cli_page() -> str:
    root = typer.main.get_command(app)
    lines = ["# CLI reference", "", "Generated from the typer app (`mlc_farm/cli/`). For what each command does in a",
             "sentence, see [Commands at a glance](commands.md).", ""]  # fmt: skip
    for name, command in commands(root, "mlc-farm"):
        params = [p for p in command.params if p.name != "help"]
        arguments = " ".join(p.name.upper() for p in params if p.param_type_name == "argument")
        usage = f"`{name} [OPTIONS]{' ' + arguments if arguments else ''}`"
        lines += [f"## `{name}`", "", usage, "", inspect.cleandoc(command.help or ""), ""]
        options = [p for p in params if p.param_type_name == "option"]
        if options:
            lines += ["| option | default | what it does |", "| --- | --- | --- |"]
            for p in options:
                flags = ", ".join(f"`{o}`" for o in p.opts)
                default = "" if p.default in (None, False) or callable(p.default) else f"`{cell(p.default)}`"
                lines.append(f"| {flags} | {default} | {cell(p.help or '')} |")
            lines.append("")
    return "\n".join(lines)


def exit_codes_page() -> str:
    classes = [c for c in vars(errors).values() if inspect.isclass(c) and issubclass(c, errors.FarmError)]
    rows = [f"| `{c.__name__}` | {c.exit_code} | {cell(inspect.getdoc(c) or '')} |" for c in classes]
    return "\n".join(["# Exit codes and errors", "", (INCLUDES / "exit_codes.md").read_text(), "",
                      "Every error the farm raises on purpose, from `mlc_farm/errors.py`:", "",
                      "| error | exit code | meaning |", "| --- | --- | --- |", *rows, ""])  # fmt: skip


def settings_page() -> str:
    return "\n".join(["# Settings", "", (INCLUDES / "settings_intro.md").read_text(), "", settings_table(), "",
                      (INCLUDES / "settings_after.md").read_text()])  # fmt: skip


for path, text in {"reference/cli.md": cli_page(), "reference/settings.md": settings_page(),
                   "reference/exit-codes.md": exit_codes_page()}.items():  # fmt: skip
    with mkdocs_gen_files.open(path, "w") as f:
        f.write(text)
