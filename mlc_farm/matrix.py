"""matrix.yaml: the schema, its validation, and its expansion into cells.

Every error names the file, the path of the field (`models[2].quantizations[0]`) and the bad value, so a
user can fix a 200-line catalog without guessing. Loading reads only the file and the local source
directories; nothing is written.
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlc_farm.errors import BadInput

# The names `mlc_llm convert_weight --quantization` accepts (shared/mlc-reference/README.md).
QUANTIZATIONS: tuple[str, ...] = (
    "q0f16", "q0bf16", "q0f32", "q3f16_0", "q3f16_1", "q4f16_0", "q4f16_1", "q4bf16_0", "q4bf16_1",
    "q4f32_1", "q4f16_2", "q4f16_autoawq", "q4f16_ft", "e5m2_e5m2_f16", "e4m3_e4m3_f16",
    "e4m3_e4m3_f16_max_calibrate", "fp8_e4m3fn_bf16_block_scale",
    "fp8_e4m3fn_bf16_block_scale_static_activation",
)  # fmt: skip

Family = Literal["cuda", "rocm", "vulkan", "metal", "opencl", "webgpu", "cpu", "android", "iphone"]

# The library file a family's compile produces (`-o` decides the kind of library).
LIB_EXT: dict[str, str] = {
    "cuda": "so", "rocm": "so", "vulkan": "so", "opencl": "so", "cpu": "so",
    "metal": "dylib", "webgpu": "wasm", "android": "tar", "iphone": "tar",
}  # fmt: skip

# `compile --device` values and the family each builds for (shared/mlc-reference: presets, local devices,
# TVM targets as JSON or as a string). Local devices (`cuda`, `cuda:0`) must be present where compile runs.
_TARGET_FAMILY: dict[str, str] = {
    "llvm": "cpu", "cpu": "cpu", "c": "cpu", "cuda": "cuda", "rocm": "rocm", "vulkan": "vulkan",
    "vulkan:generic": "vulkan", "metal": "metal", "metal:generic": "metal", "metal:x86-64": "metal",
    "opencl": "opencl", "opencl:generic": "opencl", "windows:adreno_x86": "opencl", "webgpu": "webgpu",
    "iphone": "iphone", "macabi": "iphone", "android": "android", "android:adreno": "android",
    "android:adreno-so": "android", "mali": "android",
}  # fmt: skip
# The generic LLVM triple a family's host code is compiled for (`compile --host`) unless a device sets `host`.
DEFAULT_HOST: dict[str, str] = {"metal": "arm64-apple-darwin"}
GENERIC_HOST = "x86_64-unknown-linux-gnu"
_TRIPLE = re.compile(r"^[a-z0-9_]+(-[a-z0-9_.]+){1,3}\Z")
_OPT = re.compile(r"^(O[0-3]|[a-z_]+=[A-Za-z0-9_]+(;[a-z_]+=[A-Za-z0-9_]+)*)\Z")
_CONVERT_DEVICE = re.compile(r"^(auto|cpu|cuda|rocm|metal|vulkan|opencl)(:[0-9]+)?\Z")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class MatrixError(BadInput):
    """A matrix that cannot be built, with every problem found (file, field path, value, hint)."""

    def __init__(self, file: str, problems: list[str]):
        self.file = file
        self.problems = problems
        super().__init__(f"{file}: invalid matrix\n" + "\n".join(f"  - {p}" for p in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HFSource(_Strict):
    """A Hugging Face model repo at a revision (branch, tag or commit), resolved to a commit at plan time."""

    hf: str
    revision: str = "main"

    @field_validator("hf")
    @classmethod
    def _repo_id(cls, v: str) -> str:
        if not _HF_REPO.match(v):
            raise ValueError("must be a Hugging Face repo id like 'org/name'")
        return v


class LocalSource(_Strict):
    """A Hugging Face-format model directory on disk; relative paths are relative to matrix.yaml."""

    path: str


class Overrides(_Strict):
    """Options of `gen_config` that also change the compiled library (passed to `compile --overrides`)."""

    context_window_size: Annotated[int, Field(gt=0)] | None = None
    sliding_window_size: Annotated[int, Field(ge=-1)] | None = None
    prefill_chunk_size: Annotated[int, Field(gt=0)] | None = None
    attention_sink_size: Annotated[int, Field(ge=-1)] | None = None
    tensor_parallel_shards: Annotated[int, Field(gt=0)] | None = None
    pipeline_parallel_stages: Annotated[int, Field(gt=0)] | None = None
    max_batch_size: Annotated[int, Field(gt=0)] | None = None

    def items(self) -> list[tuple[str, int]]:
        """The options that are set, in a fixed order."""
        return [(k, v) for k, v in self.model_dump().items() if v is not None]


class ModelPublish(_Strict):
    """Per-model publishing: the repo name (may use {org}, {model}, {quant}), privacy, or `enabled: false`."""

    repo: str | None = None
    private: bool | None = None
    enabled: bool = True


class Publish(_Strict):
    """Publishing to the Hugging Face Hub: off unless this section is present."""

    org: str | None = None  # default: $MLC_FARM_HF_ORG
    repo: str = "{org}/{model}-{quant}-MLC"
    private: bool = False


class ModelSpec(_Strict):
    id: str
    source: HFSource | LocalSource
    conv_template: str
    model_type: str | None = None
    overrides: Overrides = Overrides()
    quantizations: list[str] | None = None
    devices: list[str] | None = None
    publish: ModelPublish = ModelPublish()


class DeviceSpec(_Strict):
    name: str
    family: Family
    # The value passed to `mlc_llm compile --device`: a preset (`llvm`, `vulkan:generic`) or a TVM target.
    target: str
    # Several CUDA architectures in one library: exported as MLC_MULTI_ARCH=80,86,90a.
    cuda_archs: list[str] = []
    pool: str | None = None
    opt: str | None = None
    lib_ext: str | None = None
    # `compile --host`: the LLVM triple of the CPU code around the kernels. Without it the toolchain tunes that
    # code for whichever worker compiled it, and the library may not run on an older CPU.
    host: str | None = None

    @property
    def host_triple(self) -> str:
        return self.host or DEFAULT_HOST.get(self.family, GENERIC_HOST)

    @property
    def work_pool(self) -> str:
        return self.pool or f"mlc-{self.family}"

    @property
    def library_ext(self) -> str:
        return self.lib_ext or LIB_EXT[self.family]


class Rule(_Strict):
    """An include/exclude rule: the fields it sets must all match; an omitted field matches anything."""

    model: str | None = None
    quantization: str | None = None
    device: str | None = None

    def matches(self, model: str, quantization: str, device: str) -> bool:
        return all(
            want is None or want == have
            for want, have in ((self.model, model), (self.quantization, quantization), (self.device, device))
        )


class Matrix(_Strict):
    quantizations: list[str]
    devices: list[DeviceSpec]
    models: list[ModelSpec]
    include: list[Rule] = []
    exclude: list[Rule] = []
    # `convert_weight --device`: `cpu` by default, since `auto` spends ~20 s probing GPUs for nothing.
    convert_device: str = "cpu"
    # Farm mode: the work pool that converts weights (no GPU needed with convert_device cpu).
    weights_pool: str = "mlc-cpu"
    publish: Publish | None = None

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


def _pydantic_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        # Union members show up in the location (`source.HFSource.hf`); keep the user's field path only.
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p[:1].isupper()))
        value = e.get("input")
        shown = "" if e["type"] == "missing" else f" (got {value!r})"
        problems.append(f"{_loc(loc)}: {e['msg']}{shown}")
    return sorted(set(problems), key=problems.index)


def target_family(target: str) -> str | None:
    """The device family a `compile --device` value builds for, or None when it is not one the toolchain takes."""
    if target in _TARGET_FAMILY:
        return _TARGET_FAMILY[target]
    if target.startswith("{"):
        try:
            kind = json.loads(target).get("kind")
        except (ValueError, AttributeError):
            return None
    else:
        kind = target.split(":")[0] if re.fullmatch(r"[a-z]+:[0-9]+", target) else target.split(" ")[0]
    return (
        _TARGET_FAMILY.get(str(kind))
        if kind in ("llvm", "c", "cuda", "rocm", "vulkan", "metal", "opencl", "webgpu")
        else None
    )


def _device_problems(path: str, d: DeviceSpec) -> list[str]:
    problems = []
    family = target_family(d.target)
    if family is None:
        problems.append(
            f"{path}.target: {d.target!r} is not a target compile takes (a preset such as llvm, vulkan:generic, "
            'webgpu, iphone, android; a local device such as cuda; or a TVM target like {"kind":"cuda","arch":"sm_90a"})'
        )
    elif family != d.family:
        problems.append(f"{path}.target: {d.target!r} builds for {family}, but family is {d.family!r}")
    if d.opt is not None and not _OPT.match(d.opt):
        problems.append(f"{path}.opt: {d.opt!r} is not O0..O3 or a flag string like 'cutlass=0;cudagraph=1'")
    if d.host is not None and not _TRIPLE.match(d.host):
        problems.append(f"{path}.host: {d.host!r} is not an LLVM triple like 'x86_64-unknown-linux-gnu'")
    for j, arch in enumerate(d.cuda_archs):
        if not re.fullmatch(r"[0-9]{2,3}a?", arch):
            problems.append(f"{path}.cuda_archs[{j}]: {arch!r} is not a CUDA architecture like '80' or '90a'")
    if d.cuda_archs and d.family != "cuda":
        problems.append(f"{path}.cuda_archs: only a cuda device takes CUDA architectures (family is {d.family!r})")
    return problems


def _check_names(m: Matrix, base_dir: Path) -> list[str]:
    problems: list[str] = []
    device_names = [d.name for d in m.devices]

    def safe(path: str, value: str, what: str) -> None:
        if not _SAFE_NAME.match(value) or ".." in value:
            problems.append(f"{path}: {value!r} is not a safe {what} (letters, digits, '.', '_', '-'; no '/' or '..')")

    def known_quant(path: str, q: str) -> None:
        if q not in QUANTIZATIONS:
            problems.append(f"{path}: unknown quantization {q!r}{_hint(q, QUANTIZATIONS)}")

    def known_device(path: str, d: str) -> None:
        if d not in device_names:
            problems.append(f"{path}: unknown device {d!r}{_hint(d, device_names)}")

    for i, q in enumerate(m.quantizations):
        known_quant(f"quantizations[{i}]", q)
    for i, d in enumerate(m.devices):
        safe(f"devices[{i}].name", d.name, "device name")
    for i, d in enumerate(m.devices):
        if d.name in device_names[:i]:
            problems.append(f"devices[{i}].name: duplicate device {d.name!r}")
        problems += _device_problems(f"devices[{i}]", d)
    if not _CONVERT_DEVICE.match(m.convert_device):
        problems.append(
            f"convert_device: {m.convert_device!r} is not a device convert_weight takes "
            "(cpu, auto, cuda, cuda:N, rocm:N, metal, vulkan, opencl)"
        )
    seen: set[str] = set()
    for i, model in enumerate(m.models):
        safe(f"models[{i}].id", model.id, "model id")
        if model.id in seen:
            problems.append(f"models[{i}].id: duplicate model id {model.id!r}")
        seen.add(model.id)
        for j, q in enumerate(model.quantizations or []):
            known_quant(f"models[{i}].quantizations[{j}]", q)
        for j, name in enumerate(model.devices or []):
            known_device(f"models[{i}].devices[{j}]", name)
        if isinstance(model.source, LocalSource):
            path = (base_dir / model.source.path).resolve()
            if not path.is_dir():
                problems.append(f"models[{i}].source.path: directory {model.source.path!r} does not exist")
            elif not (path / "config.json").is_file():
                problems.append(f"models[{i}].source.path: {model.source.path!r} holds no config.json")

    def placeholders(path: str, template: str) -> None:
        if bad := sorted(set(re.findall(r"{(\w*)}", template)) - {"org", "model", "quant"}):
            problems.append(f"{path}: unknown placeholder {{{bad[0]}}} in {template!r}")

    if m.publish:
        placeholders("publish.repo", m.publish.repo)
    for i, model in enumerate(m.models):
        if model.publish.repo:
            placeholders(f"models[{i}].publish.repo", model.publish.repo)
            quants = model.quantizations or m.quantizations
            if "{quant}" not in model.publish.repo and len(quants) > 1:
                problems.append(
                    f"models[{i}].publish.repo: {model.publish.repo!r} names one repo for {len(quants)} "
                    "quantizations; add {quant} to it"
                )
    model_ids = [x.id for x in m.models]
    for kind, rules in (("include", m.include), ("exclude", m.exclude)):
        for i, r in enumerate(rules):
            if r.model is None and r.quantization is None and r.device is None:
                problems.append(f"{kind}[{i}]: the rule names nothing (set model, quantization or device)")
            if r.model is not None and r.model not in model_ids:
                problems.append(f"{kind}[{i}].model: unknown model {r.model!r}{_hint(r.model, model_ids)}")
            if r.quantization is not None:
                known_quant(f"{kind}[{i}].quantization", r.quantization)
            if r.device is not None:
                known_device(f"{kind}[{i}].device", r.device)
    return problems


def parse_matrix(text: str, file: str = "matrix.yaml", base_dir: Path | None = None) -> LoadedMatrix:
    """Parse and validate matrix YAML text; raise MatrixError listing every problem."""
    base_dir = base_dir or Path.cwd()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise MatrixError(file, [f"{where}malformed YAML: {getattr(e, 'problem', None) or e}"]) from None
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
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MatrixError(str(path), [f"cannot read the file: {e.strerror}"]) from None
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
    problems = []
    for flag, wanted, known, pick in (
        ("--model", models, [x.id for x in m.models], lambda c: c.model),
        ("--quantization", quantizations, sorted({c.quantization for c in cells}), lambda c: c.quantization),
        ("--device", devices, [d.name for d in m.devices], lambda c: c.device),
    ):
        if not wanted:
            continue
        problems += [f"{flag}: unknown {flag[2:]} {x!r}{_hint(x, known)}" for x in wanted if x not in known]
        cells = [c for c in cells if pick(c) in wanted]
    if problems:
        raise MatrixError(file, problems)
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
