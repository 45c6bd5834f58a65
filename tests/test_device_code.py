"""A CUDA library is checked for the code its runtime needs where it is built, without a GPU (the reference's
"CUDA libraries on a real NVIDIA GPU"): a library holding the CUDA source only, or missing an architecture it was
asked for, fails its build with the reason; the architectures found are recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_farm.catalog import all_records, read_entry
from mlc_farm.device_code import CudaCode, cuda_code, cuda_problem
from mlc_farm.store.local import LocalStore
from tests.helpers import DOUBLE, cli, run_cli, toolchain_calls

sys.path.insert(0, str(DOUBLE))
from mlc_llm import _library

MATRIX = """
quantizations: [q4f16_1]
devices:
  - {name: h100, family: cuda, target: '{"kind":"cuda","arch":"sm_90a"}', cuda_archs: ['80', '90a'], pool: mlc-cpu}
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""


def test_the_kinds_of_cuda_library_are_told_apart_from_their_bytes() -> None:
    fat = cuda_code(_library.MAGIC + b"{}\n" + _library.cuda_fatbin([80, 90]))
    assert fat == CudaCode(archs=["80", "90"], source=False)
    assert cuda_problem(fat, ["80", "90a"]) is None  # 90a's images carry SM 90
    assert "not sm_86" in (cuda_problem(fat, ["86", "90"]) or "")
    source = cuda_code(_library.MAGIC + b"{}\n" + _library.CUDA_SOURCE)
    assert source == CudaCode(archs=[], source=True)
    assert "the CUDA source only" in (cuda_problem(source, []) or "")
    assert "libcuda.so.1" in (cuda_problem(source, []) or "")
    # A host library is an ELF too, of another machine: nothing in it is read as CUDA code.
    host = Path(sys.executable).resolve().read_bytes()
    assert cuda_code(host) == CudaCode(archs=[], source=False)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_a_cuda_library_without_the_binaries_it_needs_is_not_built(tiny_models: Path, tmp_path: Path) -> None:
    matrix = tiny_models / f"cuda-{tmp_path.name}.yaml"
    matrix.write_text(MATRIX)
    store = tmp_path / "store"

    def build(**env: str) -> str:
        done = cli("build", "--matrix", str(matrix), "--store", str(store), env=env)
        assert done.returncode == (1 if env else 0), done.stdout + done.stderr
        return (done.stdout + done.stderr).replace("\n", " ")

    said = build(MLC_DOUBLE_NO_DRIVER="1")  # a CPU-only builder: the compile succeeds, with CUDA source only
    assert "holds the CUDA source only" in said and "libcuda.so.1" in said
    said = build(MLC_DOUBLE_CUDA_ARCHS="90")  # asked for 80 and 90a, holds 90 only
    assert "holds sm_90 but not sm_80 of its cuda_archs" in said
    build()
    libraries = [r for _, r in all_records(LocalStore(store)) if r.kind == "library"]
    assert [r.cuda_archs for r in libraries] == [["80", "90"]]
    # What the library holds, not what the matrix asked (90a), is what the catalog says it needs.
    entry = read_entry(LocalStore(store), "tiny-llama-a", "q4f16_1")
    assert (
        entry is not None and entry.libs["h100"].runtime and entry.libs["h100"].runtime.needs.cuda_archs == ["80", "90"]
    )


OFFLOAD_MATRIX = """
quantizations: [q0f16, q4f16_1]
devices:
  - {name: h100, family: cuda, target: '{"kind":"cuda","arch":"sm_90a"}', pool: mlc-cpu%s}
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""


@pytest.mark.parametrize(
    ("opt", "refused"),
    [("", True), (", opt: O3", True), (", opt: 'cublas_gemm=0'", False), (", opt: 'cutlass=1;cublas_gemm=0'", False)],
)
def test_a_pool_without_cublas_refuses_what_the_default_opt_would_compile_with_it(
    tiny_models: Path, tmp_path: Path, opt: str, refused: bool
) -> None:
    matrix = tiny_models / f"offload-{tmp_path.name}.yaml"
    matrix.write_text(OFFLOAD_MATRIX % opt)
    calls = tmp_path / "calls.log"
    done = run_cli(
        "plan", "--matrix", str(matrix), env={"MLC_DOUBLE_NO_OFFLOAD": "cublas", "MLC_DOUBLE_LOG": str(calls)}
    )
    said = done.stderr.replace("\n", " ")
    if refused:
        assert done.returncode == 2, done.stdout + done.stderr
        assert "device h100 (q0f16): its opt" in said and "compiles with cublas_gemm" in said
        assert "TVM has no cuBLAS (USE_CUBLAS): give the device opt: 'cublas_gemm=0'" in said
        assert "(q4f16_1)" not in said  # a quantized build does not use cuBLAS by default
    else:
        assert done.returncode == 0, done.stdout + done.stderr
    assert not [c for c in toolchain_calls(calls) if c["step"] == "compile"]
    explained = run_cli("toolchain", env={"MLC_DOUBLE_NO_OFFLOAD": "cublas"})
    assert "offload: cublas no, cutlass yes, flashinfer yes" in explained.stdout


def test_the_double_fails_at_compile_as_the_real_tool_without_cublas(tmp_path: Path) -> None:
    config = tmp_path / "mlc-chat-config.json"
    config.write_text(json.dumps({"model_type": "llama", "quantization": "q0f16", "model_config": {}}))
    argv = [sys.executable, "-m", "mlc_llm", "compile", str(config), "--device", '{"kind":"cuda","arch":"sm_90"}',
            "--quantization", "q0f16", "-o", str(tmp_path / "lib.so")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "MLC_DOUBLE_NO_OFFLOAD": "cublas"})
    assert done.returncode == 1 and "RuntimeError: cuBLAS is not enabled." in done.stderr
    assert not (tmp_path / "lib.so").exists()
