"""matrix.yaml: the schema, its validation, and its expansion into cells.

Every error names the file, the path of the field (`models[2].quantizations[0]`) and the bad value, so a
user can fix a 200-line catalog without guessing. Loading reads only the file and the local source
directories; nothing is written.
"""

from __future__ import annotations

import difflib
import re
import string
import typing
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from mlc_farm.checks import fidelity_rules
from mlc_farm.devices import FAMILIES, target_family
from mlc_farm.devices import family as device_family
from mlc_farm.errors import BadInput, MatrixError, SelectionError
from mlc_farm.names import shorten, unsafe, unsafe_repo

# The names `mlc_llm convert_weight --quantization` accepts (shared/mlc-reference/README.md).
QUANTIZATIONS: tuple[str, ...] = (
    "q0f16", "q0bf16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4bf16_0", "q4bf16_1",
    "q4f32_1", "q4f16_2", "q4f16_autoawq", "q4f16_ft", "e5m2_e5m2_f16", "e4m3_e4m3_f16",
    "e4m3_e4m3_f16_max_calibrate", "fp8_e4m3fn_bf16_block_scale",
    "fp8_e4m3fn_bf16_block_scale_static_activation",
)  # fmt: skip


def _family(value: str) -> str:
    """A device family of the registry (mlc_farm/devices.py)."""
    if value not in FAMILIES:
        *rest, last = map(repr, FAMILIES)
        raise ValueError(f"Input should be {', '.join(rest)} or {last} (got {shorten(value)})")
    return value


FamilyName = Annotated[str, AfterValidator(_family)]
_TRIPLE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_.]+){1,3}\Z")
_OPT = re.compile(r"^(O[0-3]|[a-z_]+=[A-Za-z0-9_]+(;[a-z_]+=[A-Za-z0-9_]+)*)\Z")
_CONVERT_DEVICE = re.compile(
    rf"^(auto|{'|'.join(sorted({f.mlc_device for f in FAMILIES.values() if f.convert_on}))})(:[0-9]+)?\Z"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _safe(what: str) -> AfterValidator:
    def check(value: str) -> str:
        if problem := unsafe(value, what):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def check_names(**names: str | None) -> None:
    """Names given on the command line (model, quantization, device), by the matrix's rules, since they become
    store paths: BadInput naming each argument that breaks them (keyword `model_id` -> `MODEL_ID`)."""
    what = {"model": "model id", "quantization": "quantization", "device": "device name"}
    problems = [
        f"{arg.upper()} {problem}"
        for arg, value in names.items()
        if value is not None and (problem := unsafe(value, what.get(arg, arg)))
    ]
    if problems:
        raise BadInput("; ".join(problems))


def _quantization(value: str) -> str:
    if value not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {shorten(value)}{_hint(value, QUANTIZATIONS)}")
    return value


def _not_empty(value: list[Any]) -> list[Any]:
    if not value:
        raise ValueError("an empty list; leave the field out to use all")
    return value


def _repo_template(value: str) -> str:
    """A publish.repo template must format with {org}, {model}, {quant} only: checked now, not at publish."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as e:
        raise ValueError(f"{shorten(value)} is not a valid template ({e})") from None
    if bad := sorted(fields - {"org", "model", "quant"}):
        raise ValueError(f"unknown placeholder {{{bad[0]}}} in {shorten(value)} (use {{org}}, {{model}}, {{quant}})")
    return value


PoolName = Annotated[str, _safe("pool name")]
Quantization = Annotated[str, AfterValidator(_quantization)]
Count = Annotated[StrictInt, Field(gt=0, le=2**31)]
Window = Annotated[StrictInt, Field(ge=-1, le=2**31)]


class HFSource(_Strict):
    """A Hugging Face model repo at a revision (branch, tag or commit), resolved to a commit at plan time."""

    hf: str
    revision: str = "main"

    @field_validator("hf")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        if unsafe_repo(v):
            raise ValueError("must be a Hugging Face repo id like 'org/name'")
        return v


def _source_kind(value: Any) -> str:
    """Which kind of source a matrix entry means, so that its problems are those of that kind only."""
    if isinstance(value, dict) and "hf" not in value:
        if "path" in value:
            return "Local"
        if "tiny" in value:
            return "Tiny"
    return "HF"


def _path(value: str) -> str:
    """A path the filesystem can take: no NUL or newline, components of at most 255 bytes, 4,096 in all."""
    if "\x00" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{shorten(value)} holds a NUL or a line break, which no path can")
    if len(value.encode()) > 4096 or any(len(part.encode()) > 255 for part in value.split("/")):
        raise ValueError(f"{shorten(value)} is too long for a path (components of at most 255 bytes, 4,096 in all)")
    return value


class LocalSource(_Strict):
    """A Hugging Face-format model directory on disk; relative paths are relative to matrix.yaml."""

    path: Annotated[str, AfterValidator(_path)]


class TinySource(_Strict):
    """The farm's own tiny Llama (`mlc_farm/tiny_model.py`) of a seed, made wherever it is read: a model every
    worker has without a download, for `farm check-pool` and for trying the farm."""

    tiny: Annotated[StrictInt, Field(ge=0, le=2**31)]


# Tags start upper-case: the error paths drop them (`models[0].source.path`, not `source.Local.path`).
Source = Annotated[
    Annotated[HFSource, Tag("HF")] | Annotated[LocalSource, Tag("Local")] | Annotated[TinySource, Tag("Tiny")],
    Discriminator(_source_kind),
]


class Overrides(_Strict):
    """Options of `gen_config` that also change the compiled library (passed to `compile --overrides`)."""

    context_window_size: Count | None = None
    sliding_window_size: Window | None = None
    prefill_chunk_size: Count | None = None
    attention_sink_size: Window | None = None
    tensor_parallel_shards: Count | None = None
    pipeline_parallel_stages: Count | None = None
    max_batch_size: Count | None = None

    def items(self) -> list[tuple[str, int]]:
        """The options that are set, in a fixed order."""
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class ModelPublish(_Strict):
    """Per-model publishing: the repo name (may use {org}, {model}, {quant}), privacy, or `enabled: false`."""

    repo: Annotated[str, AfterValidator(_repo_template)] | None = None
    private: StrictBool | None = None
    enabled: StrictBool = True


class Publish(_Strict):
    """Publishing to the Hugging Face Hub: off unless this section is present."""

    org: str | None = None  # default: $MLC_FARM_HF_ORG
    repo: Annotated[str, AfterValidator(_repo_template)] = "{org}/{model}-{quant}-MLC"
    private: StrictBool | None = None  # None: private exactly when the source is gated or private


class ModelSpec(_Strict):
    id: Annotated[str, _safe("model id")]
    source: Source
    conv_template: Annotated[str, Field(min_length=1, max_length=128)]
    model_type: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    overrides: Overrides = Overrides()
    quantizations: Annotated[list[Quantization], AfterValidator(_not_empty)] | None = None
    devices: Annotated[list[str], AfterValidator(_not_empty)] | None = None
    publish: ModelPublish = ModelPublish()
    fidelity: fidelity_rules.Rules | None = None  # over the matrix's


class DeviceSpec(_Strict):
    name: Annotated[str, _safe("device name")]
    family: FamilyName
    # The value passed to `mlc_llm compile --device`: a preset (`llvm`, `vulkan:generic`) or a TVM target.
    target: str
    # Several CUDA architectures in one library: exported as MLC_MULTI_ARCH=80,86,90a.
    cuda_archs: list[str] = []
    pool: PoolName | None = None
    opt: str | None = None
    lib_ext: Annotated[str, Field(pattern=r"^[a-z0-9]{1,8}$")] | None = None
    # `compile --host`: the LLVM triple of the CPU code around the kernels. Without it the toolchain tunes that
    # code for whichever worker compiled it, and the library may not run on an older CPU.
    host: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeviceSpec:
        if problems := _device_problems(self):
            raise ValueError(_FIELD_PROBLEMS + "\n".join(problems))
        return self

    @property
    def host_triple(self) -> str:
        return self.host or device_family(self.family).default_host

    @property
    def work_pool(self) -> str:
        return self.pool or f"mlc-{self.family}"

    @property
    def library_ext(self) -> str:
        return self.lib_ext or device_family(self.family).lib_ext


class Rule(_Strict):
    """An include/exclude rule: the fields it sets must all match; an omitted field matches anything."""

    model: str | None = None
    quantization: Quantization | None = None
    device: str | None = None

    def matches(self, model: str, quantization: str, device: str) -> bool:
        return all(
            want is None or want == have
            for want, have in ((self.model, model), (self.quantization, quantization), (self.device, device))
        )


class Matrix(_Strict):
    quantizations: Annotated[list[Quantization], AfterValidator(_not_empty)]
    devices: Annotated[list[DeviceSpec], AfterValidator(_not_empty)]
    models: Annotated[list[ModelSpec], AfterValidator(_not_empty)]
    include: list[Rule] = []
    exclude: list[Rule] = []
    # `convert_weight --device`: `cpu` by default, since `auto` spends ~20 s probing GPUs for nothing.
    convert_device: str = "cpu"

    @field_validator("convert_device")
    @classmethod
    def _convert_device(cls, v: str) -> str:
        if not _CONVERT_DEVICE.match(v):
            raise ValueError(
                f"{shorten(v)} is not a device convert_weight takes (cpu, auto, cuda, cuda:N, rocm:N, metal, vulkan, opencl)"
            )
        return v

    # Farm mode: the work pool that converts weights (no GPU needed with convert_device cpu).
    weights_pool: PoolName = "mlc-cpu"
    publish: Publish | None = None
    # Thresholds of the fidelity gate over the defaults of each quantization family (mlc_farm.checks.fidelity_rules).
    fidelity: fidelity_rules.Rules | None = None
    # What a convert key holds of the toolchain: its conversion fingerprint (a tiny twin converted by it:
    # mlc_farm/planning/twins.py), so a nightly re-converts only what its converter changed; or `toolchain`: its version.
    convert_identity: Literal["fingerprint", "toolchain"] = "fingerprint"

    def device(self, name: str) -> DeviceSpec:
        return next(d for d in self.devices if d.name == name)

    def model(self, model_id: str) -> ModelSpec:
        return next(m for m in self.models if m.id == model_id)


class Cell(_Strict):
    model: str
    quantization: str
    device: str


class LoadedMatrix(_Strict):
    """A validated matrix and where it came from (local sources resolve against `base_dir`)."""

    matrix: Matrix
    file: str
    base_dir: Path

    def local_path(self, source: LocalSource) -> Path:
        return (self.base_dir / source.path).resolve()


def _fold(name: str) -> str:
    """Fold look-alike characters (l/I/1, O/0) and case: `q4f16_l` is a typo of `q4f16_1`."""
    return name.lower().translate(str.maketrans("lio", "110"))


def _hint(value: Any, choices: list[str] | tuple[str, ...]) -> str:
    lookalike = [c for c in choices if _fold(c) == _fold(str(value))]
    close = lookalike or difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(choices)}"


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# A validator that reports several `field: problem` lines (a device's checks) starts its message with this.
_FIELD_PROBLEMS = "fields:\n"


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
        if msg.startswith(_FIELD_PROBLEMS):
            problems += [f"{_loc(loc)}.{line}" for line in msg.removeprefix(_FIELD_PROBLEMS).splitlines()]
            continue
        if e["type"] == "extra_forbidden":
            close = _suggest(loc)
            hint = f" (unknown field; did you mean {close!r}?)" if close else " (unknown field)"
            problems.append(f"{_loc(loc)}: {msg}{hint}")
            continue
        shown = "" if e["type"] in ("missing", "value_error") else f" (got {shorten(e.get('input'))})"
        problems.append(f"{_loc(loc)}: {msg}{shown}")
    return sorted(set(problems), key=problems.index)


def _device_problems(d: DeviceSpec) -> list[str]:
    """What is wrong with a device whose fields each have the right type: `field: problem` lines."""
    problems = []
    family = target_family(d.target)
    if family is None:
        problems.append(
            f"target: {shorten(d.target)} is not a target compile takes (a preset such as llvm, vulkan:generic, "
            'webgpu, iphone, android; a local device such as cuda; or a TVM target like {"kind":"cuda","arch":"sm_90a"})'
        )
    elif family != d.family:
        problems.append(f"target: {shorten(d.target)} builds for {family}, but family is {d.family!r}")
    if d.opt is not None and not _OPT.match(d.opt):
        problems.append(f"opt: {shorten(d.opt)} is not O0..O3 or a flag string like 'cutlass=0;cudagraph=1'")
    if d.host is not None and not _TRIPLE.match(d.host):
        problems.append(f"host: {shorten(d.host)} is not an LLVM triple like 'x86_64-unknown-linux-gnu'")
    for j, arch in enumerate(d.cuda_archs):
        if not re.fullmatch(r"[0-9]{2,3}a?", arch):
            problems.append(f"cuda_archs[{j}]: {shorten(arch)} is not a CUDA architecture like '80' or '90a'")
    if d.cuda_archs and d.family != "cuda":
        problems.append(f"cuda_archs: only a cuda device takes CUDA architectures (family is {d.family!r})")
    return problems


def _check_names(m: Matrix, base_dir: Path) -> list[str]:
    """Names that must be unique or must name something: devices, models, their sources, repos and rules."""
    device_names = [d.name for d in m.devices]
    problems = [f"devices[{i}].name: duplicate device {d.name!r}" for i, d in enumerate(m.devices)
                if d.name in device_names[:i]]  # fmt: skip
    seen: set[str] = set()
    for i, model in enumerate(m.models):
        if model.id in seen:
            problems.append(f"models[{i}].id: duplicate model id {model.id!r}")
        seen.add(model.id)
        problems += [_unknown_device(f"models[{i}].devices[{j}]", name, device_names)
                     for j, name in enumerate(model.devices or []) if name not in device_names]  # fmt: skip
        problems += _source_problems(f"models[{i}].source.path", model, base_dir)
        problems += _repo_problems(f"models[{i}].publish.repo", model, m)
    return problems + _rule_problems(m, device_names)


def _unknown_device(path: str, name: str, device_names: list[str]) -> str:
    return f"{path}: unknown device {name!r}{_hint(name, device_names)}"


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
                problems.append(f"{kind}[{i}].model: unknown model {r.model!r}{_hint(r.model, model_ids)}")
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
        problems = _check_rules_match(matrix)
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


def _base_cells(m: Matrix) -> list[Cell]:
    all_devices = [d.name for d in m.devices]
    return [
        Cell(model=model.id, quantization=q, device=d)
        for model in m.models
        for q in (model.quantizations or m.quantizations)
        for d in (model.devices or all_devices)
    ]


def _included_cells(m: Matrix, rule: Rule) -> list[Cell]:
    return [
        Cell(model=model.id, quantization=q, device=d.name)
        for model in m.models
        for q in QUANTIZATIONS
        for d in m.devices
        if rule.matches(model.id, q, d.name) and (rule.quantization or q in m.quantizations)
    ]


def _check_rules_match(m: Matrix) -> list[str]:
    """A rule that selects no cell is almost always a typo: say so instead of building something else."""
    base = _base_cells(m)
    problems = [
        f"exclude[{i}]: matches no cell of the matrix ({r.model_dump(exclude_none=True)})"
        for i, r in enumerate(m.exclude)
        if not any(r.matches(c.model, c.quantization, c.device) for c in base)
    ]
    problems += [
        f"include[{i}]: matches no model/quantization/device combination ({r.model_dump(exclude_none=True)})"
        for i, r in enumerate(m.include)
        if not _included_cells(m, r)
    ]
    return problems


def expand(m: Matrix) -> list[Cell]:
    """Cells to build: each model x its quantizations x its devices, minus `exclude`, plus `include`.

    As in a CI matrix, `exclude` applies to the product and `include` adds cells back afterwards.
    """
    cells = [c for c in _base_cells(m) if not any(r.matches(c.model, c.quantization, c.device) for r in m.exclude)]
    for rule in m.include:
        cells += [c for c in _included_cells(m, rule) if c not in cells]
    return cells


def select_cells(
    m: Matrix,
    file: str,
    models: list[str] | None = None,
    quantizations: list[str] | None = None,
    devices: list[str] | None = None,
) -> list[Cell]:
    """The cells of the named models, quantizations and devices (all when None); an unknown name is an
    error, not an empty build."""
    cells = expand(m)
    problems, lines = [], []
    choices: list[tuple[str, list[str] | None, list[str], Callable[[Cell], str]]] = [
        ("--model", models, [x.id for x in m.models], lambda c: c.model),
        ("--quantization", quantizations, sorted({c.quantization for c in cells}), lambda c: c.quantization),
        ("--device", devices, [d.name for d in m.devices], lambda c: c.device),
    ]
    for flag, wanted, known, pick in choices:
        if not wanted:
            continue
        for x in wanted:
            if x not in known:
                problems.append(f"{flag}: unknown {flag[2:]} {shorten(x)}{_hint(x, known)}")
                lines.append(f"no {flag[2:]} {shorten(x)} in {file}{_hint(x, known)}")
        cells = [c for c in cells if pick(c) in wanted]
    if problems:
        raise SelectionError(file, problems, lines)
    return cells


class Accepted(BaseModel):
    """The names a toolchain accepts: asked of the installed mlc_llm's registries, or the built-in list."""

    model_config = ConfigDict(frozen=True)

    quantizations: tuple[str, ...]
    conv_templates: tuple[str, ...] | None = None  # None: unknown without a toolchain, so unchecked
    model_types: tuple[str, ...] | None = None
    source: str = "the built-in list (no toolchain found: conv templates and model types are not checked)"


BUILTIN_NAMES = Accepted(quantizations=QUANTIZATIONS)


def toolchain_problems(m: Matrix, accepted: Accepted) -> list[str]:
    """Names of the matrix the toolchain would reject, found before anything runs (each with a did-you-mean)."""
    problems = []
    quants = {f"quantizations[{i}]": q for i, q in enumerate(m.quantizations)}
    for i, model in enumerate(m.models):
        quants |= {f"models[{i}].quantizations[{j}]": q for j, q in enumerate(model.quantizations or [])}
        if accepted.conv_templates is not None and model.conv_template not in accepted.conv_templates:
            problems.append(
                f"models[{i}].conv_template: {model.conv_template!r} is not a conv template of the toolchain"
                + _hint(model.conv_template, sorted(accepted.conv_templates))
            )
        if accepted.model_types is not None and model.model_type and model.model_type not in accepted.model_types:
            problems.append(
                f"models[{i}].model_type: {model.model_type!r} is not a model type of the toolchain"
                + _hint(model.model_type, sorted(accepted.model_types))
            )
    problems += [
        f"{path}: {q!r} is not a quantization of the toolchain{_hint(q, accepted.quantizations)}"
        for path, q in quants.items()
        if q not in accepted.quantizations
    ]
    return problems
