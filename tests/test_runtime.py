"""Issue 21: mlc_llm finds the farm's builds by itself (install, the exact JIT key), every library names the
runtime it needs, and a mismatch is refused in one line before anything is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlc_farm.records.reads import entries
from mlc_farm.store import open_store
from mlc_farm.toolchain import jit
from tests.helpers import DOUBLE, REFERENCE, ROOT, run_cli, toolchain_calls
from tests.test_fidelity import run, write_matrix

SAMPLE = REFERENCE / "sample-library-q4f16_1" / "weights-mlc-chat-config.json"
NAME = "farm/tiny-q4f16_1"


def double_keys(cases: list[tuple[Path, dict, str]]) -> list[tuple[str, str | None]]:
    """The double's own JIT keys (mlc_llm.interface.jit, written from the reference apart from the farm's), in
    its interpreter: (md5, system-lib prefix) per (config, overrides, device)."""
    code = ("import json, sys; from mlc_llm.interface.jit import key_of; "
            "print(json.dumps([key_of(json.load(open(c)), o, d) for c, o, d in json.loads(sys.argv[1])]))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, json.dumps([(str(c), o, d) for c, o, d in cases])],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return [tuple(k) for k in json.loads(done.stdout)]


def configs(tmp_path: Path) -> dict[str, Path]:
    """The reference's sample config, one without its derived fields (the config class fills them), a
    tensor-parallel one and one with a sliding window."""
    base = json.loads(SAMPLE.read_text())
    variants = {"sample": base}
    sparse = json.loads(SAMPLE.read_text())
    for derived in ("head_dim", "num_key_value_heads", "prefill_chunk_size"):
        del sparse["model_config"][derived]
    variants["derived fields left out"] = sparse
    variants["tensor parallel"] = {**base, "tensor_parallel_shards": 2,
                                   "model_config": {**base["model_config"], "tensor_parallel_shards": 2}}  # fmt: skip
    variants["sliding window"] = {**base, "sliding_window_size": 256}
    out = {}
    for i, (name, doc) in enumerate(variants.items()):
        out[name] = tmp_path / f"c{i}" / "mlc-chat-config.json"
        out[name].parent.mkdir()
        out[name].write_text(json.dumps(doc))
    return out


OVERRIDES = [
    {},
    {"context_window_size": 1024, "prefill_chunk_size": 256, "max_batch_size": 4},
    {"context_window_size": -1, "sliding_window_size": -1, "attention_sink_size": -1},
    {"tensor_parallel_shards": 2, "pipeline_parallel_stages": 1, "opt": "O3"},
]


def test_the_farms_jit_key_is_the_one_mlc_llm_computes(tmp_path: Path) -> None:
    devices = ["cpu:0", "cuda:0", "cuda:3", "vulkan:1", "iphone", "android"]
    farm, cases = {}, []
    for name, config in configs(tmp_path).items():
        for i, given in enumerate(OVERRIDES):
            overrides = {k: v for k, v in given.items() if k != "opt"}
            for device, key in jit.keys(json.loads(config.read_text()), devices, overrides, given.get("opt")).items():
                farm[(name, i, device)] = (key.md5, key.system_lib_prefix)
                cases.append((config, given, device))
    assert list(farm.values()) == double_keys(cases)
    # The config class fills the derived fields: a config without them is the same library.
    assert all(farm[("derived fields left out", i, d)] == farm[("sample", i, d)] for _, i, d in farm)
    # Every override set and device string is another library; -1 sizes and O3 count, None ones do not.
    assert len({farm[("sample", i, d)] for _, i, d in farm}) == len(OVERRIDES) * len(devices)
    prefix = farm[("sample", 0, "iphone")][1]
    assert prefix and prefix.startswith("llama_q4f16_1_") and "-" not in prefix
    assert farm[("sample", 0, "cuda:0")][1] is None


def test_the_cache_root_follows_mlc_llms_rule(tmp_path: Path) -> None:
    assert jit.mlc_llm_home({"MLC_LLM_HOME": "/a", "XDG_CACHE_HOME": "/b"}) == Path("/a")
    assert jit.mlc_llm_home({"XDG_CACHE_HOME": "/b"}) == Path("/b/mlc_llm")
    assert jit.mlc_llm_home({}) == Path.home() / ".cache" / "mlc_llm"
    key = jit.JitKey(md5="0" * 32)
    assert jit.cache_file(tmp_path, key, "cuda:0").name == "0" * 32 + ".so"
    assert jit.cache_file(tmp_path, key, "iphone").suffix == ".tar"
    assert jit.device_strings("llvm") == ["cpu:0"]
    assert jit.device_strings("cuda", [0, 1]) == ["cuda:0", "cuda:1"]
    assert jit.device_strings("webgpu") == []


def engine_env(home: Path, log: Path) -> dict[str, str]:
    return {**os.environ, "MLC_LLM_HOME": str(home), "MLC_JIT_POLICY": "READONLY",
            "MLC_DOWNLOAD_CACHE_POLICY": "READONLY", "MLC_DOUBLE_LOG": str(log), "PYTHONPATH": str(DOUBLE)}  # fmt: skip


def mlc_chat(model: str, env: dict[str, str], device: str = "cpu") -> subprocess.CompletedProcess:
    """`mlc_llm chat MODEL --device D` (the double), one line of input."""
    return subprocess.run([sys.executable, "-m", "mlc_llm", "chat", model, "--device", device], input="Hello\n",
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def built(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with tiny q4f16_1 built for the CPU (and a vulkan library this machine cannot run)."""
    tmp = tmp_path_factory.mktemp("runtime")
    store = tmp / "store"
    with pytest.MonkeyPatch.context() as env:  # once for the module: the per-test environment, by hand
        env.setenv("PYTHONPATH", os.pathsep.join([str(DOUBLE), str(ROOT)]))
        env.setenv("MLC_FARM_WORK_DIR", str(tmp / "work"))
        env.setenv("MLC_FARM_CACHE", str(tmp / "cache"))
        env.delenv("PREFECT_API_URL", raising=False)
        result, _ = run(write_matrix(tiny_models, tmp, "[q4f16_1]"), store)
    assert result.ok, result
    return store


def test_after_install_mlc_llm_runs_the_farms_build_with_no_download_and_no_compile(
    built: Path, tmp_path: Path
) -> None:
    home, log = tmp_path / "mlc", tmp_path / "calls.jsonl"
    before = mlc_chat(f"HF://{NAME}", engine_env(home, log))
    assert before.returncode != 0 and "not in the cache" in before.stderr
    done = run_cli("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--as", NAME, "--store", str(built))
    assert done.returncode == 0, done.stdout + done.stderr
    entry = next(e for e in entries(open_store(str(built))))
    lib = entry.libs["cpu"]
    assert set(lib.jit_keys) == {"cpu:0"}  # the catalog names the cache file, for anyone to check
    cache_file = home / "model_lib" / f"{lib.jit_keys['cpu:0'].md5}.so"
    assert f"library for cpu:0: {cache_file}" in done.stdout
    # No vulkan device here: that library is not installed (without a Vulkan driver it is not even considered;
    # with one, the toolchain's runtime says it has no such device, and install says so).
    assert "library for vulkan" not in done.stdout
    assert "vulkan" not in done.stdout.replace(
        "not installed: vulkan's library (no vulkan device in this toolchain's runtime)", ""
    )

    chat = mlc_chat(f"HF://{NAME}", engine_env(home, log))
    assert chat.returncode == 0, chat.stderr
    assert f"model: {home / 'model_weights' / 'hf' / NAME}" in chat.stdout
    assert f"model_lib: {cache_file}" in chat.stdout
    assert [c["step"] for c in toolchain_calls(log)] == ["chat", "chat"]  # no compile, no download
    open_store(str(built)).get_blob(lib.file.sha256, tmp_path / "built.so")
    assert cache_file.read_bytes() == (tmp_path / "built.so").read_bytes()  # the farm's library, byte for byte

    again = run_cli("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--as", NAME, "--store", str(built))
    assert again.returncode == 0 and "already installed" in again.stdout


def test_a_different_library_at_the_name_is_replaced_only_with_force(built: Path, tmp_path: Path) -> None:
    home = tmp_path / "mlc"
    args = ("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--as", NAME, "--store", str(built))
    assert run_cli(*args).returncode == 0
    cache_file = next((home / "model_lib").iterdir())
    cache_file.write_bytes(b"another library")
    refused = run_cli(*args)
    assert refused.returncode == 2
    assert "holds another library (15 bytes" in refused.stdout + refused.stderr and "--force" in refused.stderr
    assert cache_file.read_bytes() == b"another library"
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0 and f"replaced {cache_file}" in forced.stdout.replace("\n", "")


def test_a_library_of_another_runtime_is_refused_in_one_line_before_anything_is_loaded(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, log = tmp_path / "mlc", tmp_path / "calls.jsonl"
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0")
    monkeypatch.setenv("MLC_DOUBLE_COMMIT", "f" * 40)
    monkeypatch.setenv("MLC_DOUBLE_LOG", str(log))
    done = run_cli("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--store", str(built))
    assert done.returncode == 1
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "built with mlc_llm 0.20.0.dev0" in message and "this runtime is mlc_llm 0.21.0" in message
    assert "install the runtime the library was built with, or take a build made for yours" in message
    assert not home.exists() and not log.exists()
    forced = run_cli("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--store", str(built), "--any-runtime")
    assert forced.returncode == 0, forced.stderr
    pulled = tmp_path / "pulled"
    refused = run_cli("pull", "tiny", "q4f16_1", "-o", str(pulled), "--check-runtime", "--store", str(built))
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "this runtime is mlc_llm 0.21.0" in refused.stderr and not pulled.exists()
    monkeypatch.delenv("MLC_DOUBLE_VERSION")
    monkeypatch.delenv("MLC_DOUBLE_COMMIT")
    assert (
        run_cli("pull", "tiny", "q4f16_1", "-o", str(pulled), "--check-runtime", "--store", str(built)).returncode == 0
    )
    monkeypatch.setenv("MLC_DOUBLE_COMMIT", "f" * 40)  # same version, another commit: another runtime
    refused = run_cli("validate", "tiny", "q4f16_1", "--dir", str(pulled), "--store", str(built))
    assert refused.returncode == 1 and "ffffffffffff" in refused.stderr, refused.stdout
    assert not log.exists()  # nothing was loaded


TWO_RUNTIMES = """
quantizations: [q4f16_1]
devices:
  - {name: cpu-nightly, family: cpu, target: llvm, pool: mlc-cpu}
  - {name: cpu-stable, family: cpu, target: llvm, pool: mlc-stable}
models:
  - {id: tiny, source: {path: models/a}, conv_template: LM}
"""


@pytest.mark.slow
def test_two_pools_with_different_toolchains_build_one_model_and_each_library_is_picked_by_runtime(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging
    import stat

    from mlc_farm.building.preflight import preflight
    from mlc_farm.building.run import MatrixRun, Progress
    from mlc_farm.toolchain.probe import probe_here
    from tests.test_run import InPlace

    stable = tmp_path / "stable-python"  # another mlc_llm release installed beside tonight's
    stable.write_text(f'#!/bin/sh\nMLC_DOUBLE_VERSION=0.19.0 MLC_DOUBLE_COMMIT={"5" * 40} exec {sys.executable} "$@"\n')
    stable.chmod(stable.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("MLC_FARM_POOL_MLC_LLM", json.dumps({"mlc-stable": f"{stable} -m mlc_llm"}))
    matrix, store = tiny_models / f"two-{tmp_path.name}.yaml", tmp_path / "store"
    matrix.write_text(TWO_RUNTIMES)
    pre = preflight(str(matrix), None, None, None, str(store), lambda st, pools: probe_here(pools))
    assert set(pre.toolchain.pools) == {"mlc-stable"} and pre.toolchain.mlc_llm_version == "0.20.0.dev0"
    result = MatrixRun(pre, InPlace(pre.store()), False, Progress(), logging.getLogger("test")).execute()
    assert result.ok, result.message

    (entry,) = entries(open_store(str(store)))
    built = {d: (ref.runtime.mlc_llm_version if ref.runtime else None) for d, ref in entry.libs.items()}
    assert built == {"cpu-nightly": "0.20.0.dev0", "cpu-stable": "0.19.0"}
    assert all(ref.validation.run.status == "passed" and ref.fidelity for ref in entry.libs.values())
    listed = run_cli("ls", "--store", str(store), env={"COLUMNS": "250"})
    assert "0.19.0" in listed.stdout and "0.20.0.dev0" in listed.stdout

    for version, device in (("0.19.0", "cpu-stable"), ("0.20.0.dev0", "cpu-nightly"), ("5555555", "cpu-stable")):
        out = tmp_path / f"pulled-{version}"
        done = run_cli("pull", "tiny", "q4f16_1", "-o", str(out), "--runtime", version, "--store", str(store))
        assert done.returncode == 0, done.stderr
        (lib,) = (out / "libs").iterdir()
        assert lib.name.split("-q4f16_1-")[1].rsplit("-", 1)[0] == device
        assert f'"mlc_llm": "{built[device]}"' in lib.read_text(errors="replace")  # compiled by that toolchain
    unknown = run_cli(
        "pull", "tiny", "q4f16_1", "-o", str(tmp_path / "x"), "--runtime", "0.18.0", "--store", str(store)
    )
    assert unknown.returncode == 2 and "built with: 0.19.0 (555555555555), 0.20.0.dev0" in unknown.stderr

    def served(*runtime: str) -> list[str]:
        done = run_cli("export", "mlc-serve", "--base-url", "https://cdn.example/m", *runtime, "--store", str(store))
        assert done.returncode == 0, done.stderr
        return sorted(json.loads(done.stdout)["models"][0]["model_lib"])

    assert served() == ["cpu-nightly", "cpu-stable"] and served("--runtime", "0.19.0") == ["cpu-stable"]

    home = tmp_path / "mlc"  # this machine runs tonight's mlc_llm: install takes the library it can load
    done = run_cli("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--store", str(store))
    assert done.returncode == 0, done.stderr
    (installed,) = (home / "model_lib").iterdir()
    assert installed.name == f"{entry.libs['cpu-nightly'].jit_keys['cpu:0'].md5}.so"
    assert entry.libs["cpu-nightly"].jit_keys == entry.libs["cpu-stable"].jit_keys  # the same cache name
    other = run_cli("install", "tiny", "q4f16_1", "--mlc-home", str(home), "--runtime", "0.19.0", "--store", str(store))
    assert other.returncode == 1 and "built with mlc_llm 0.19.0" in other.stderr


def test_a_library_for_another_gpu_or_cpu_is_named_as_such() -> None:
    from mlc_farm.checks import runtime
    from mlc_farm.matrix.schema import DeviceSpec
    from mlc_farm.toolchain.info import ToolchainInfo

    tc = {"mlc_llm_version": "0.20", "mlc_llm_commit": "a" * 40, "tvm_version": "0.22", "tvm_commit": "b" * 40}
    here = ToolchainInfo(**tc)
    cuda = DeviceSpec(name="gpu", family="cuda", target="cuda", cuda_archs=["80", "90"])
    lib = runtime.of_library(tc, cuda, "q4f16_1")
    assert lib is not None and lib.needs.cuda_archs == ["80", "90"] and lib.needs.device == "cuda"
    assert runtime.mismatch(lib, here, ["80"], "x86_64") is None
    assert runtime.mismatch(lib, here, ["86"], "x86_64") is None  # an sm_80 cubin runs on an 8.6 GPU
    said = runtime.mismatch(lib, here, ["75"], "x86_64")
    assert said and "library holds sm_80, sm_90; this GPU is sm_75" in said
    said = runtime.mismatch(lib, here, ["75", "120"], "x86_64")
    assert said and "library holds sm_80, sm_90; these GPUs are sm_75, sm_120" in said
    arm = runtime.of_library(tc, DeviceSpec(name="c", family="cpu", target="llvm", host="aarch64-unknown-linux-gnu"),
                             "q4f16_1")  # fmt: skip
    assert arm and runtime.mismatch(arm, here, None, "arm64") is None
    said = runtime.mismatch(arm, here, None, "x86_64")
    assert said and "compiled for aarch64-unknown-linux-gnu; this machine is x86_64" in said
    web = runtime.of_library(tc, DeviceSpec(name="w", family="webgpu", target="webgpu"), "q4f16_1")
    assert web and web.needs.features == ["shader-f16"] and runtime.mismatch(web, here, None, "x86_64") is None
    json_target = DeviceSpec(name="a", family="cuda", target='{"kind": "cuda", "arch": "sm_86"}')
    assert (found := runtime.of_library(tc, json_target, "q0f16")) and found.needs.cuda_archs == ["86"]
    rocm = DeviceSpec(name="r", family="rocm", target='{"kind": "rocm", "mcpu": "gfx90a"}')
    assert (found := runtime.of_library(tc, rocm, "q0f16")) and found.needs.rocm_mcpu == "gfx90a"
    assert runtime.of_library({"mlc_llm_version": "x"}, cuda, "q0f16") is None  # a record that does not say


def test_a_gpu_library_is_keyed_for_every_device_of_its_kind_here_or_the_indices_given(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = next(e for e in entries(open_store(str(built))))
    recorded = entry.libs["vulkan"].jit_keys
    assert sorted(recorded) == [f"vulkan:{i}" for i in range(8)]  # what the catalog lists, for anyone to check
    monkeypatch.setenv("MLC_DOUBLE_DEVICES", "vulkan*2")  # two Vulkan GPUs on this machine
    home = tmp_path / "mlc"
    args = ("install", "tiny", "q4f16_1", "--device", "vulkan", "--mlc-home", str(home), "--store", str(built))
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (home / "model_lib").iterdir()) == sorted(
        f"{recorded[f'vulkan:{i}'].md5}.so" for i in (0, 1)
    )
    indices = run_cli(*args[:-2], "--device-index", "3", "--store", str(built))
    assert indices.returncode == 0 and f"{recorded['vulkan:3'].md5}.so" in indices.stdout
    bad = run_cli(*args[:-2], "--device-index", "one", "--store", str(built))
    assert bad.returncode == 2 and "--device-index 'one'" in bad.stderr
