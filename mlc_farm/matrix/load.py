"""Loading matrix.yaml as hostile input: size, depth and alias limits before parsing, then every problem at
once, each naming the file, the path of the field (`models[2].quantizations[0]`) and the bad value, so a
user can fix a 200-line catalog without guessing; and a matrix checked against a toolchain's names. Loading
reads only the file and the local source directories; nothing is written.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from mlc_farm.errors import MatrixError
from mlc_farm.matrix.cells import unmatched_rules
from mlc_farm.matrix.schema import (
    FIELD_PROBLEMS,
    Accepted,
    LoadedMatrix,
    LocalSource,
    Matrix,
    ModelSpec,
    hint,
)
from mlc_farm.names import shorten


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# A validator that reports several `field: problem` lines (a device's checks) starts its message with this.


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every field of a model and of the models inside it, as dotted paths (`models.overrides.prefill_chunk_size`):
    what a misspelled or misplaced key is compared with."""
    paths = set()
    for name, field in model.model_fields.items():
        paths.add(prefix + name)
        for arg in typing.get_args(field.annotation) or (field.annotation,):
            for inner in (*typing.get_args(arg), arg):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    paths |= _field_paths(inner, f"{prefix}{name}.")
    return paths


def _suggest(loc: tuple[Any, ...]) -> str | None:
    """The field an unknown key at `loc` was meant to be, as a path from where it stands: a typo of a sibling
    (`overides` -> 'overrides'), or a field one level down (`context_window_size` on a model ->
    'overrides.context_window_size')."""
    parent = ".".join(p for p in loc[:-1] if isinstance(p, str))
    here = [p.removeprefix(f"{parent}.") if parent else p for p in _field_paths(Matrix) if p.startswith(parent)]
    here = [p for p in here if p and not p.startswith(".")]
    by_name: dict[str, str] = {}
    for path in sorted(here, key=lambda p: (p.count("."), p)):  # the nearest field of a name wins
        by_name.setdefault(path.rsplit(".", 1)[-1], path)
    close = difflib.get_close_matches(str(loc[-1]), sorted(by_name), n=1, cutoff=0.75)
    return by_name[close[0]] if close and by_name[close[0]] != loc[-1] else None


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        # Union members show up in the location (`source.HFSource.hf`); keep the user's field path only.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p[:1].isupper()))
        msg = e["msg"].removeprefix("Value error, ")
        if msg.startswith(FIELD_PROBLEMS):
            problems += [f"{_loc(loc)}.{line}" for line in msg.removeprefix(FIELD_PROBLEMS).splitlines()]
            continue
        if e["type"] == "extra_forbidden":
            close = _suggest(loc)
            hint = f" (unknown field; did you mean {close!r}?)" if close else " (unknown field)"
            problems.append(f"{_loc(loc)}: {msg}{hint}")
            continue
        shown = "" if e["type"] in ("missing", "value_error") else f" (got {shorten(e.get('input'))})"
        problems.append(f"{_loc(loc)}: {msg}{shown}")
    return sorted(set(problems), key=problems.index)


def _check_names(m: Matrix, base_dir: Path) -> list[str]:
    """Names that must be unique or must name something: devices, models, their sources, repos and rules."""
    device_names = [d.name for d in m.devices]
    problems = [
        f"devices[{i}].name: duplicate device {d.name!r}" for i, d in enumerate(m.devices) if d.name in device_names[:i]
    ]
    seen: set[str] = set()
    for i, model in enumerate(m.models):
        if model.id in seen:
            problems.append(f"models[{i}].id: duplicate model id {model.id!r}")
        seen.add(model.id)
        problems += [
            _unknown_device(f"models[{i}].devices[{j}]", name, device_names)
            for j, name in enumerate(model.devices or [])
            if name not in device_names
        ]
        problems += _source_problems(f"models[{i}].source.path", model, base_dir)
        problems += _repo_problems(f"models[{i}].publish.repo", model, m)
    return problems + _rule_problems(m, device_names)


def _unknown_device(path: str, name: str, device_names: list[str]) -> str:
    return f"{path}: unknown device {name!r}{hint(name, device_names)}"


def _source_problems(path: str, model: ModelSpec, base_dir: Path) -> list[str]:
    if not isinstance(model.source, LocalSource):
        return []
    found = (base_dir / model.source.path).resolve()
    if not found.is_dir():
        return [f"{path}: directory {shorten(model.source.path)} does not exist"]
    if not (found / "config.json").is_file():
        return [f"{path}: {shorten(model.source.path)} holds no config.json"]
    return []


def _repo_problems(path: str, model: ModelSpec, m: Matrix) -> list[str]:
    quants = model.quantizations or m.quantizations
    if model.publish.repo and "{quant}" not in model.publish.repo and len(quants) > 1:
        return [f"{path}: {model.publish.repo!r} names one repo for {len(quants)} quantizations; add {{quant}} to it"]
    return []


def _rule_problems(m: Matrix, device_names: list[str]) -> list[str]:
    problems = []
    model_ids = [x.id for x in m.models]
    for kind, rules in (("include", m.include), ("exclude", m.exclude)):
        for i, r in enumerate(rules):
            if r.model is None and r.quantization is None and r.device is None:
                problems.append(f"{kind}[{i}]: the rule names nothing (set model, quantization or device)")
            if r.model is not None and r.model not in model_ids:
                problems.append(f"{kind}[{i}].model: unknown model {r.model!r}{hint(r.model, model_ids)}")
            if r.device is not None and r.device not in device_names:
                problems.append(_unknown_device(f"{kind}[{i}].device", r.device, device_names))
    return problems


MAX_BYTES = 4 << 20  # a catalog of thousands of models is well under 1 MB


MAX_VALUES = 200_000  # values once YAML aliases are expanded: more is an alias bomb, not a catalog


MAX_DEPTH = 32


MAX_DIGITS = 100  # far longer than any number of a matrix; Python refuses to convert past 4,300


class _Oversized:
    """An integer too long to be one of a matrix's numbers, kept as what it is so that validation names the
    field it stands in (and nothing converts thousands of digits)."""

    def __init__(self, digits: int):
        self.digits = digits

    def __repr__(self) -> str:
        return f"an integer of {self.digits:,} digits"


class _Loader(yaml.SafeLoader):
    """safe_load, refusing duplicate keys (YAML would silently keep the last one), and integers of more than
    MAX_DIGITS digits."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> object:  # type: ignore[override]
        if (digits := sum(c.isdigit() for c in str(node.value))) > MAX_DIGITS:
            return _Oversized(digits)
        return super().construct_yaml_int(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Hashable] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shorten(key)} (line {line})", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _size_problem(data: object) -> str | None:
    """Walk the loaded document with a budget: too many values (aliases expanding) or too deep."""
    stack: list[tuple[object, int]] = [(data, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"the matrix expands to more than {MAX_VALUES:,} values (YAML aliases?)"
        if depth > MAX_DEPTH:
            return f"the matrix nests deeper than {MAX_DEPTH} levels"
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]
    return None


def parse_matrix(text: str, file: str = "matrix.yaml", base_dir: Path | None = None) -> LoadedMatrix:
    """Parse and validate matrix YAML text; raise MatrixError listing every problem. Hostile input (alias
    bombs, deep nesting, duplicate keys, huge files) is refused with a short message in bounded time."""
    base_dir = base_dir or Path.cwd()
    if len(text) > MAX_BYTES:
        raise MatrixError(file, [f"the file is {len(text):,} characters; a matrix is at most {MAX_BYTES:,}"])
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = str(getattr(e, "problem", None) or e)
        raise MatrixError(file, [f"{where}malformed YAML: {what[:200]}"]) from None
    except RecursionError:
        raise MatrixError(file, [f"the matrix nests deeper than {MAX_DEPTH} levels"]) from None
    if problem := _size_problem(data):
        raise MatrixError(file, [problem])
    if not isinstance(data, dict):
        raise MatrixError(file, [f"the top level must be a mapping, got {type(data).__name__}"])
    try:
        matrix = Matrix.model_validate(data)
    except ValidationError as e:
        raise MatrixError(file, _pydantic_problems(e)) from None
    problems = _check_names(matrix, base_dir)
    if not problems:
        problems = unmatched_rules(matrix)
    if problems:
        raise MatrixError(file, problems)
    return LoadedMatrix(matrix=matrix, file=file, base_dir=base_dir.resolve())


def load_matrix(path: str | Path) -> LoadedMatrix:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        text = raw.decode("utf-8")
    except OSError as e:
        raise MatrixError(str(path), [f"cannot read the file: {e.strerror}"]) from None
    except UnicodeDecodeError as e:
        raise MatrixError(str(path), [f"not UTF-8 text (byte {e.start})"]) from None
    return parse_matrix(text, str(path), path.parent)


def toolchain_problems(m: Matrix, accepted: Accepted) -> list[str]:
    """Names of the matrix the toolchain would reject, found before anything runs (each with a did-you-mean)."""
    problems = []
    quants = {f"quantizations[{i}]": q for i, q in enumerate(m.quantizations)}
    for i, model in enumerate(m.models):
        quants |= {f"models[{i}].quantizations[{j}]": q for j, q in enumerate(model.quantizations or [])}
        if accepted.conv_templates is not None and model.conv_template not in accepted.conv_templates:
            problems.append(
                f"models[{i}].conv_template: {model.conv_template!r} is not a conv template of the toolchain"
                + hint(model.conv_template, sorted(accepted.conv_templates))
            )
        if accepted.model_types is not None and model.model_type and model.model_type not in accepted.model_types:
            problems.append(
                f"models[{i}].model_type: {model.model_type!r} is not a model type of the toolchain"
                + hint(model.model_type, sorted(accepted.model_types))
            )
    problems += [
        f"{path}: {q!r} is not a quantization of the toolchain{hint(q, accepted.quantizations)}"
        for path, q in quants.items()
        if q not in accepted.quantizations
    ]
    return problems
