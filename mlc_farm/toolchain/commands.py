"""The exact `mlc_llm` command lines of shared/mlc-reference, and the environment a compile needs."""

from __future__ import annotations

from pathlib import Path

from mlc_farm.matrix.schema import DeviceSpec, Overrides


def convert_weight_args(
    source_dir: Path, quantization: str, out: Path, device: str, model_type: str | None
) -> list[str]:
    args = ["convert_weight", str(source_dir), "--quantization", quantization, "--device", device]
    if model_type:
        args += ["--model-type", model_type]
    return [*args, "-o", str(out)]


def gen_config_args(
    source_dir: Path,
    quantization: str,
    conv_template: str,
    overrides: Overrides,
    out: Path,
    model_type: str | None,
) -> list[str]:
    args = ["gen_config", str(source_dir), "--quantization", quantization, "--conv-template", conv_template]
    for name, value in overrides.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    if model_type:
        args += ["--model-type", model_type]
    return [*args, "-o", str(out)]


def compile_args(config: Path, device: DeviceSpec, overrides: Overrides, out: Path) -> list[str]:
    """`--host` always: left to `auto`, the library carries the CPU of whichever worker compiled it."""
    args = ["compile", str(config), "--device", device.target, "--host", device.host_triple]
    if device.opt:
        args += ["--opt", device.opt]
    if overrides.items():
        args += ["--overrides", ";".join(f"{k}={v}" for k, v in overrides.items())]
    return [*args, "-o", str(out)]


def compile_env(device: DeviceSpec) -> dict[str, str]:
    return {"MLC_MULTI_ARCH": ",".join(device.cuda_archs)} if device.cuda_archs else {}
