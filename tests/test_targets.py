"""Issue 23: every target the matrix accepts is built where it is sent. Pools report what they can compile
(emcc and mlc_wasm_runtime.bc, Xcode, the NDK, nvcc and its architectures, ROCm); `plan` and `build` refuse a
device its pool cannot build before anything runs; the double fails as the real tool does without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_farm.records.reads import entries, load_record
from mlc_farm.store import open_store
from tests.helpers import DOUBLE, REFERENCE, run_cli, toolchain_calls

WEB = """
quantizations: [q4f32_1]
devices:
  - {name: web, family: webgpu, target: webgpu, pool: mlc-cpu}
models:
  - {id: tiny, source: {path: models/a}, conv_template: LM}
"""
FAT_CUDA = """
quantizations: [q4f16_1]
devices:
  - {name: gpu, family: cuda, target: cuda, cuda_archs: ['80', '100'], pool: mlc-cuda}
models:
  - {id: tiny, source: {path: models/a}, conv_template: LM}
"""


def write(tiny_models: Path, tmp_path: Path, text: str) -> Path:
    path = tiny_models / f"targets-{tmp_path.name}.yaml"
    path.write_text(text)
    return path


def without_emcc(monkeypatch: pytest.MonkeyPatch) -> None:
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p != str(DOUBLE / "bin")]
    monkeypatch.setenv("PATH", os.pathsep.join(path))


def test_a_webgpu_device_on_a_pool_without_emcc_is_refused_before_any_step_runs(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix, log = write(tiny_models, tmp_path, WEB), tmp_path / "calls.jsonl"
    monkeypatch.setenv("MLC_DOUBLE_LOG", str(log))
    without_emcc(monkeypatch)
    for command in ("build", "plan"):
        done = run_cli(command, "--matrix", str(matrix), "--store", str(tmp_path / "store"))
        assert done.returncode == 2, done.stdout + done.stderr
        assert ("device web: target webgpu needs emcc and mlc_wasm_runtime.bc on pool mlc-cpu; emcc not found"
                in done.stderr)  # fmt: skip
        if command == "build":  # refused before any step ran
            assert toolchain_calls(log) == [] and not list((tmp_path / "store").rglob("*.json"))
    assert "plan for" in done.stdout  # the plan is shown, with what cannot be built under it
    monkeypatch.delenv("MLC_LLM_SOURCE_DIR")
    done = run_cli("plan", "--matrix", str(matrix), "--store", str(tmp_path / "store"))
    assert "emcc not found, mlc_wasm_runtime.bc not found" in done.stderr


@pytest.mark.slow
def test_with_emcc_and_the_bitcode_the_same_matrix_builds_a_wasm_that_names_its_emcc(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_DOUBLE_EMCC_VERSION", "3.1.73")
    matrix, store = write(tiny_models, tmp_path, WEB), tmp_path / "store"
    done = run_cli("build", "--matrix", str(matrix), "--store", str(store))
    assert done.returncode == 0, done.stdout + done.stderr
    (entry,) = entries(open_store(str(store)))
    lib = load_record(open_store(str(store)), entry.libs["web"].key)
    assert lib is not None and lib.files[0].path.endswith(".wasm")
    assert "3.1.73" in lib.inputs["tools"]["emcc"]  # the record names the emcc that built it
    assert entry.libs["web"].runtime and entry.libs["web"].runtime.needs.device == "webgpu"
    monkeypatch.setenv("MLC_DOUBLE_EMCC_VERSION", "3.1.74")  # a new emcc on the pool: the library is rebuilt
    plan = json.loads(run_cli("plan", "--matrix", str(matrix), "--store", str(store), "--format", "json").stdout)
    assert [b["in_store"] for b in plan["library_builds"]] == [False]


def test_cuda_archs_beyond_the_pools_nvcc_are_refused(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_DOUBLE_NVCC_ARCHS", "75,80,86,89,90")
    matrix = write(tiny_models, tmp_path, FAT_CUDA)
    done = run_cli("plan", "--matrix", str(matrix), "--store", str(tmp_path / "store"))
    assert done.returncode == 2
    assert ("device gpu: cuda_archs 100 are beyond Cuda compilation tools, release 12.4, V12.4.131 on pool "
            "mlc-cuda, which targets 75 to 90") in done.stderr  # fmt: skip
    monkeypatch.setenv("MLC_DOUBLE_NVCC_ARCHS", "80,90,100")
    assert run_cli("plan", "--matrix", str(matrix), "--store", str(tmp_path / "store")).returncode == 0


def test_the_capabilities_are_listed_by_toolchain_and_plan_explain(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = run_cli("toolchain", env={"COLUMNS": "250"})
    assert shown.returncode == 0
    for line in ("emcc: emcc (Emscripten", "mlc_wasm_runtime.bc: ", "nvcc: Cuda compilation tools, release 12.4",
                 "TVM_NDK_CC: not set", "xcrun metal: not found"):  # fmt: skip
        assert line in shown.stdout
    assert "mlc-llm-source/web/dist/wasm/mlc_wasm_runtime.bc" in shown.stdout
    explained = run_cli("plan", "--matrix", str(write(tiny_models, tmp_path, WEB)), "--explain", "--store",
                        str(tmp_path / "store"), env={"COLUMNS": "250"})  # fmt: skip
    assert "what each pool can compile:" in explained.stdout and "  mlc-cpu: emcc: emcc (Emscripten" in explained.stdout
    monkeypatch.setenv("MLC_FARM_MLC_LLM", "/nonexistent/python -m mlc_llm")
    unknown = run_cli("plan", "--matrix", str(write(tiny_models, tmp_path, WEB)), "--store", str(tmp_path / "s"))
    assert "pool capabilities were not checked (no toolchain here)" in unknown.stdout


def compile_with(env: dict[str, str], device: str, out: Path) -> subprocess.CompletedProcess:
    config = REFERENCE / "sample-library-q4f16_1" / "weights-mlc-chat-config.json"
    staged = out.parent / "config" / "mlc-chat-config.json"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(config.read_text())
    return subprocess.run([sys.executable, "-m", "mlc_llm", "compile", str(staged), "--device", device, "-o", str(out)],
                          capture_output=True, text=True, env=env, cwd=out.parent)  # fmt: skip


def test_the_double_fails_as_the_real_tool_does_without_emcc_the_bitcode_or_the_ndk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != str(DOUBLE / "bin"))
    done = compile_with(env, "webgpu", tmp_path / "a" / "lib.wasm")
    assert done.returncode == 1 and "emcc not found" in done.stderr
    env = {**dict(os.environ), "MLC_LLM_SOURCE_DIR": str(tmp_path / "empty")}
    done = compile_with(env, "webgpu", tmp_path / "b" / "lib.wasm")
    assert done.returncode == 1 and "Cannot find library: mlc_wasm_runtime.bc" in done.stderr
    assert "web/prep_emcc_deps.sh" in done.stderr
    done = compile_with(dict(os.environ), "webgpu", tmp_path / "c" / "lib.wasm")
    assert done.returncode == 0, done.stderr
    done = compile_with(dict(os.environ), "android:adreno-so", tmp_path / "d" / "lib.so")
    assert done.returncode == 1 and "TVM_NDK_CC" in done.stderr
    done = compile_with({**os.environ, "TVM_NDK_CC": "/usr/bin/true"}, "android:adreno-so", tmp_path / "e" / "lib.so")
    assert done.returncode == 0, done.stderr


ROCM = """
quantizations: [q4f16_1]
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cpu}
  - {name: mi300, family: rocm, target: '{"kind":"rocm","mcpu":"gfx942"}', pool: mlc-rocm}
models:
  - {id: tiny, source: {path: models/a}, conv_template: LM}
"""


def test_plan_checks_each_pool_with_its_own_stored_probe(tiny_models: Path, tmp_path: Path) -> None:
    """This machine has no ROCm: its probe would refuse the ROCm pool's device; the farm's stored probe of that
    pool is the truth, and the plan says which probe it used for each pool."""
    from mlc_farm.toolchain.capabilities import Capabilities
    from mlc_farm.toolchain.probe import probe

    matrix, store = write(tiny_models, tmp_path, ROCM), tmp_path / "store"
    here = run_cli("plan", "--matrix", str(matrix), "--store", str(store))
    assert here.returncode == 2 and "the ROCm toolchain not found" in " ".join(here.stderr.split())
    found = probe().model_copy(update={"capabilities": Capabilities(rocm="6.2.4")})
    open_store(str(store)).write_json("toolchains/mlc-rocm.json", found.model_dump())
    farm = run_cli("plan", "--matrix", str(matrix), "--store", str(store))
    said = " ".join(farm.stdout.split())
    assert farm.returncode == 0, farm.stdout + farm.stderr
    assert "mlc-cpu: this machine's probe; mlc-rocm: its stored probe (toolchains/mlc-rocm.json)" in said
