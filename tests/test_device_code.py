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

from mlc_farm.checks.device_code import CudaCode, cuda_code, cuda_problem, runs_on
from mlc_farm.records.reads import all_records, read_entry
from mlc_farm.store.layout import blob_path
from mlc_farm.store.local import LocalStore
from tests.helpers import DOUBLE, built_store, cli, run_cli, toolchain_calls

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


def test_a_cuda_image_runs_on_its_major_version_at_an_equal_or_higher_minor() -> None:
    assert runs_on("80", "86") and runs_on("86", "86") and runs_on("90", "90")
    assert not runs_on("86", "80") and not runs_on("80", "90") and not runs_on("90", "86")
    assert runs_on("90a", "90") and not runs_on("90a", "100") and not runs_on("100a", "103")
    assert runs_on("100", "103") and not runs_on("120", "100")


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


TWO_GPUS = """
quantizations: [q4f16_1]
devices:
  - {name: a100, family: cuda, target: '{"kind":"cuda","arch":"sm_80"}', pool: mlc-cpu}
  - {name: h100, family: cuda, target: '{"kind":"cuda","arch":"sm_90"}', pool: mlc-cpu}
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_install_takes_the_library_with_binaries_for_this_gpu_and_refuses_one_without(
    tiny_models: Path, tmp_path: Path
) -> None:
    store, matrix = built_store(tiny_models, tmp_path, TWO_GPUS)
    entry = read_entry(LocalStore(store), "tiny-llama-a", "q4f16_1")
    assert entry is not None
    held = {d: r.runtime.needs.cuda_archs for d, r in entry.libs.items() if r.runtime}
    assert held == {"a100": ["80"], "h100": ["90"]}
    # What each library holds is said wherever a user reads what it needs: the card, the page, the serve export.
    matrix.write_text(TWO_GPUS + "publish: {org: farm-org}\n")
    card = cli("publish", "tiny-llama-a", "q4f16_1", "--matrix", str(matrix), "--store", str(store), "--dry-run",
               env={"HF_ENDPOINT": "http://127.0.0.1:9"})  # fmt: skip
    assert card.returncode == 0 and "CUDA binaries sm_90" in card.stdout and "CUDA binaries sm_80" in card.stdout
    assert run_cli("page", "--store", str(store)).returncode == 0
    assert "CUDA binaries sm_90" in (store / "catalog.json").read_text()
    served = run_cli("export", "mlc-serve", "--base-url", "https://models.example.com", "--store", str(store))
    assert json.loads(served.stdout)["models"][0]["cuda_archs"] == {"a100": ["80"], "h100": ["90"]}

    # A machine with one 8.6 GPU (nvidia-smi says so): an sm_80 cubin runs there, an sm_90 one does not.
    gpu = {"PATH": f"{DOUBLE / 'nvidia'}{os.pathsep}{os.environ['PATH']}", "MLC_DOUBLE_GPU_CAPS": "8.6",
           "MLC_DOUBLE_DEVICES": "cuda"}  # fmt: skip
    home = tmp_path / "mlc"
    where = ("--mlc-home", str(home), "--store", str(store))
    refused = cli("install", "tiny-llama-a", "q4f16_1", "--device", "h100", *where, env=gpu)
    assert refused.returncode == 1 and "h100: library holds sm_90; this GPU is sm_86" in refused.stderr
    assert not home.exists()  # refused before anything was written
    pulled = cli("pull", "tiny-llama-a", "q4f16_1", "-o", str(tmp_path / "o"), "--check-runtime", "--store",
                 str(store), env=gpu)  # fmt: skip
    assert pulled.returncode == 1 and "library holds sm_90; this GPU is sm_86" in pulled.stderr
    assert not (tmp_path / "o").exists()
    done = cli("install", "tiny-llama-a", "q4f16_1", *where, env=gpu)
    assert done.returncode == 0 and "(a100's)" in done.stdout, done.stderr
    (lib,) = (home / "model_lib").iterdir()
    assert lib.read_bytes() == (store / blob_path(entry.libs["a100"].file.sha256)).read_bytes()
    # A 9.0 GPU takes the sm_90 library.
    other = cli("install", "tiny-llama-a", "q4f16_1", "--mlc-home", str(tmp_path / "mlc90"), "--store", str(store),
                env={**gpu, "MLC_DOUBLE_GPU_CAPS": "9.0"})  # fmt: skip
    assert other.returncode == 0 and "(h100's)" in other.stdout, other.stdout + other.stderr
