"""The shape of the package (issue 29): no import cycle, in-function imports included; functions a reader can
hold; errors.py imports nothing of the project; the CLI starts without numpy, Prefect or boto3."""

from __future__ import annotations

import ast
import os
import re
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


# What each package may import besides the foundation (the modules at the top of mlc_farm), and why: exactly the
# pairs the code uses, so a new arrow is a decision made here. Each package's `__init__` says the same.
ALLOWED: dict[str, tuple[set[str], str]] = {
    "store": (set(), "bytes and documents by path: knows nothing of what they mean"),
    "matrix": (set(), "the user's matrix and its rules, on their own"),
    "huggingface": (set(), "the Hub's client and its errors, on their own"),
    "toolchain": ({"matrix", "store"}, "calls mlc_llm for a matrix's devices; a probe's answer is kept in the store"),
    "checks": ({"matrix", "toolchain"}, "a library's checks run in the toolchain against the matrix's rules"),
    "records": ({"checks", "store", "toolchain"}, "a record holds checks' figures and JIT keys, read from the store"),
    "trust": ({"records", "store"}, "signs and verifies records and entries in the store"),
    "planning": ({"checks", "huggingface", "matrix", "records", "store", "toolchain"}, "keys from the matrix, the toolchain, the checks and the Hub's commits; built is what has a record"),
    "catalog": ({"checks", "huggingface", "matrix", "planning", "records", "store", "trust"}, "moves entries to a plan's proven, attested builds and signs them; where they are on the Hub"),
    "distribute": ({"catalog", "checks", "huggingface", "matrix", "records", "store", "toolchain", "trust"}, "gives out the catalog's trusted entries, checked again where they land"),
    "report": ({"catalog", "checks", "huggingface", "planning", "records", "store", "trust"}, "tells what a plan, the catalog and its history say, with links to the Hub"),
    "farm": ({"checks", "matrix", "records", "report", "store", "toolchain", "trust"}, "the pools of a matrix's devices and the report of a pool check"),
    "building": ({"catalog", "checks", "matrix", "planning", "records", "report", "store", "toolchain", "trust"}, "runs a plan's builds and hands the catalog and the report what they found"),
    "tasks": ({"building", "catalog", "distribute", "planning", "records", "report", "store", "toolchain"}, "Prefect tasks over the builds, the catalog, publishing and the page"),
    "flows": ({"building", "farm", "matrix", "planning", "records", "report", "store", "tasks", "toolchain", "trust"}, "Prefect flows: a run given tasks, pools and artifacts"),
    "cli": ({"building", "catalog", "checks", "distribute", "farm", "flows", "matrix", "planning", "records", "report", "store", "toolchain", "trust"}, "every command: the top"),
}  # fmt: skip


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else ""


def _package_imports() -> set[tuple[str, str]]:
    """(importer, imported) packages, the foundation as ""."""
    modules = _modules()
    return {
        (_package(name), _package(dep))
        for name, path in modules.items()
        for dep in _imports(path, name, set(modules))
        if _package(dep) != _package(name)
    }


def test_each_package_imports_exactly_what_the_table_allows() -> None:
    assert {_package(m) for m in _modules()} == {"", *ALLOWED}  # a new package takes its row in ALLOWED
    used = {pair for pair in _package_imports() if pair[1]}
    allowed = {(a, b) for a, (deps, _) in ALLOWED.items() for b in deps}
    assert sorted(used - allowed) == []  # an import the table does not allow
    assert sorted(allowed - used) == []  # a row that allows what nobody uses: keep the table exact
    assert ("", "") not in used and not any(a == "" for a, _ in used)  # the foundation imports no package


def test_only_the_hub_adapter_imports_huggingface_hub() -> None:
    """One client, one table of its errors (mlc_farm/huggingface/errors.py), one retry rule."""
    importers = sorted(
        name
        for name, path in _modules().items()
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "huggingface_hub" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "huggingface_hub")
    )
    assert importers and all(name.startswith("mlc_farm.huggingface.") for name in importers), importers


def test_the_allowed_imports_have_no_cycle_and_each_init_says_its_row() -> None:
    graph = {a: deps for a, (deps, _) in ALLOWED.items()}
    assert _cycles(graph) == []
    for name, (deps, _) in ALLOWED.items():
        said = (PACKAGE / name / "__init__.py").read_text().split("May import", 1)
        assert len(said) == 2, f"{name}/__init__.py does not say what it may import"
        named = set(re.findall(r"`([a-z_]+)`", said[1].split("\n\n")[0])) & set(ALLOWED)
        assert named == deps, f"{name}/__init__.py says {sorted(named)}, the table {sorted(deps)}"


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


def test_no_function_is_complex_as_radon_counts_it() -> None:
    """Radon counts what McCabe does not (boolean operators, comprehension conditions): 20 at most, where a
    function starts to need a table or a split (ruff bounds McCabe at 15: pyproject.toml)."""
    from radon.complexity import cc_visit
    from radon.visitors import Function

    blocks = [(name, b) for name, path in _modules().items() for b in cc_visit(path.read_text())]
    functions = [(name, f) for name, b in blocks for f in [b, *getattr(b, "methods", [])] if isinstance(f, Function)]
    tangled = [f"{name}.{f.fullname}: {f.complexity}" for name, f in functions if f.complexity > 20]
    assert tangled == []


def test_errors_import_nothing_of_the_project() -> None:
    modules = _modules()
    assert _imports(modules["mlc_farm.errors"], "mlc_farm.errors", set(modules)) == set()


def test_the_cli_starts_without_numpy_prefect_or_boto3() -> None:
    heavy = ("numpy", "prefect", "boto3", "botocore", "huggingface_hub")
    code = f"import sys, mlc_farm.cli; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
