"""matrix.yaml's schema: models, quantizations, devices and rules as pydantic models, each field checked
where it is declared (names that become paths, device families, quantizations, options), and the names a
toolchain accepts.
"""

from __future__ import annotations

import difflib
import re
import string
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    field_validator,
    model_validator,
)

from mlc_farm.devices import FAMILIES, target_family
from mlc_farm.devices import family as device_family
from mlc_farm.errors import BadInput
from mlc_farm.matrix import fidelity_rules
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
        raise ValueError(f"unknown quantization {shorten(value)}{hint(value, QUANTIZATIONS)}")
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
    """Which kind of source a matrix entry means, so that its problems are those of that kind only (and which
    kind a source already made is, when a matrix is written out: a flow's parameters)."""
    if isinstance(value, LocalSource | TinySource):
        return "Local" if isinstance(value, LocalSource) else "Tiny"
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


FIELD_PROBLEMS = "fields:\n"  # a model validator's message that lists problems of fields, one a line


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
            raise ValueError(FIELD_PROBLEMS + "\n".join(problems))
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
    # Thresholds of the fidelity gate over the defaults of each quantization family (mlc_farm.matrix.fidelity_rules).
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


def hint(value: Any, choices: list[str] | tuple[str, ...]) -> str:
    lookalike = [c for c in choices if _fold(c) == _fold(str(value))]
    close = lookalike or difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(choices)}"


class Accepted(BaseModel):
    """The names a toolchain accepts: asked of the installed mlc_llm's registries, or the built-in list."""

    model_config = ConfigDict(frozen=True)

    quantizations: tuple[str, ...]
    conv_templates: tuple[str, ...] | None = None  # None: unknown without a toolchain, so unchecked
    model_types: tuple[str, ...] | None = None
    source: str = "the built-in list (no toolchain found: conv templates and model types are not checked)"


BUILTIN_NAMES = Accepted(quantizations=QUANTIZATIONS)
