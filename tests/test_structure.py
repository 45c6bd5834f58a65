"""The shape of the package (issue 29): no import cycle, in-function imports included; functions a reader can
hold; errors.py imports nothing of the project; the CLI starts without numpy, Prefect or boto3."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

PACKAGE = ROOT / "mlc_farm"


def _sources() -> list[Path]:
    """Every Python file under mlc_farm/, through the links to the top-level flows/ and tasks/."""
    return [Path(d, f) for d, _, files in os.walk(PACKAGE, followlinks=True) for f in files if f.endswith(".py")]


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    found = {}
    for path in _sources():
        if path.parent.name == "scripts":  # scripts run in the toolchain's interpreter, never imported
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The project's modules `path` imports, anywhere in it: `from a import b` is a.b when b is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])]
                )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_through_others() -> None:
    modules = _modules()
    graph = {name: _imports(path, name, set(modules)) for name, path in modules.items()}
    assert _cycles(graph) == []


# The packages from the lowest up: each imports only the foundation (the modules at the top of mlc_farm) and
# packages before it here, as each `__init__` says; README's map follows this order.
LAYERS = ["store", "matrix", "toolchain", "checks", "records", "planning", "trust", "distribute", "catalog",
          "report", "building", "farm", "tasks", "flows", "cli"]  # fmt: skip


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else ""


def test_each_package_imports_only_the_layers_below_it() -> None:
    modules = _modules()
    assert {_package(m) for m in modules} == {"", *LAYERS}  # a new package takes its place in LAYERS
    rank = {"": -1, **{name: i for i, name in enumerate(LAYERS)}}
    upward = sorted(
        f"{name} -> {dep}"
        for name, path in modules.items()
        for dep in _imports(path, name, set(modules))
        if rank[_package(dep)] > rank[_package(name)]
    )
    assert upward == []


def test_every_function_of_the_product_fits_on_a_screen() -> None:
    """60 lines at most (ruff bounds its McCabe complexity at 15: pyproject.toml)."""
    long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or not node.end_lineno:
                continue
            if (lines := node.end_lineno - node.lineno + 1) > 60:
                long.append(f"{name}.{node.name}: {lines} lines")
    assert long == []


def test_errors_import_nothing_of_the_project() -> None:
    modules = _modules()
    assert _imports(modules["mlc_farm.errors"], "mlc_farm.errors", set(modules)) == set()


def test_the_cli_starts_without_numpy_prefect_or_boto3() -> None:
    heavy = ("numpy", "prefect", "boto3", "botocore", "huggingface_hub")
    code = f"import sys, mlc_farm.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
