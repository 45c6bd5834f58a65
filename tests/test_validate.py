"""Library validation rules, on the real tool's sample library, and the catalog's rule for moving an entry."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mlc_farm.catalog.update import next_entry
from mlc_farm.checks import speed
from mlc_farm.checks.fit import fits
from mlc_farm.checks.results import FitCheck, RunCheck, Validation
from mlc_farm.checks.validate import validate_library
from mlc_farm.matrix.schema import DeviceSpec
from mlc_farm.records.schema import CatalogEntry, FileEntry, LibRef
from tests.helpers import REFERENCE

SAMPLE = REFERENCE / "sample-library-q4f16_1"


@pytest.fixture
def sample() -> tuple[dict, dict, dict]:
    """(library metadata, tensor-cache.json, mlc-chat-config.json) that the real tool produced together."""
    return tuple(json.loads((SAMPLE / n).read_text()) for n in (
        "metadata.json", "weights-tensor-cache.json", "weights-mlc-chat-config.json"))  # fmt: skip


def test_the_real_sample_library_fits_its_weights(sample: tuple[dict, dict, dict]) -> None:
    meta, cache, config = sample
    assert fits(meta, cache, config) == []
    # The records are in another order than the params: matched by name.
    assert [p["name"] for p in meta["params"]] != [r["name"] for s in cache["records"] for r in s["records"]]


def test_symbolic_dimensions_are_read_from_the_config(sample: tuple[dict, dict, dict]) -> None:
    meta, cache, config = sample
    config = copy.deepcopy(config)
    config["model_config"]["vocab_size"] = 1024  # another vocabulary than the weights were converted with
    problems = fits(meta, cache, config)
    assert (
        "model.embed_tokens.q_weight: shape ['vocab_size', 16] -> [1024, 16] in the library, [1000, 16] in the weights"
        in problems
    )
    del config["model_config"]["vocab_size"]
    config["vocab_size"] = 1000  # the top level is read when model_config lacks it
    assert fits(meta, cache, config) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda m, c, g: m["params"].append({**m["params"][0], "name": "extra.weight"}),
            "extra.weight: no such tensor",
        ),
        (lambda m, c, g: m["params"][2].update(dtype="float16"), "dtype float16 in the library, uint32 in the weights"),
        (lambda m, c, g: m["params"][2].update(shape=[385, 16]), "shape [385, 16] -> [385, 16] in the library"),
        (lambda m, c, g: g.update(model_type="qwen2"), "model_type: 'llama' in the library, 'qwen2' in the config"),
        (lambda m, c, g: g.update(quantization="q0f16"), "quantization: 'q4f16_1' in the library"),
        (lambda m, c, g: g.update(context_window_size=4096), "context_window_size: the config asks for 4096"),
        (lambda m, c, g: g.update(prefill_chunk_size=1024), "prefill_chunk_size: the config asks for 1024"),
    ],
)
def test_what_does_not_fit(sample: tuple[dict, dict, dict], change, expected: str) -> None:
    meta, cache, config = copy.deepcopy(sample)
    change(meta, cache, config)
    problems = fits(meta, cache, config)
    assert any(expected in p for p in problems), problems


def test_a_smaller_context_than_compiled_fits(sample: tuple[dict, dict, dict]) -> None:
    meta, cache, config = copy.deepcopy(sample)
    config["context_window_size"] = 256
    assert fits(meta, cache, config) == []


PASSED = Validation(fits=FitCheck(status="passed"), run=RunCheck(status="passed", device="cpu"))


def entry(convert: str, libs: dict[str, str], missing: list[str] | None = None) -> CatalogEntry:
    refs = {
        d: LibRef(
            key=k,
            file=FileEntry(path="model-lib.so", size=1, sha256=hashlib.sha256(k.encode()).hexdigest()),
            target="llvm",
            host="x",
            validation=PASSED,
        )
        for d, k in libs.items()
    }
    return CatalogEntry(model="m", quantization="q", source={}, convert=convert, config=f"cfg-{convert}", libs=refs,
                        missing=missing or [], updated_at=datetime.now(timezone.utc))  # fmt: skip


def test_the_catalog_moves_to_a_complete_set() -> None:
    chosen = next_entry(
        entry("old", {"cpu": "l1", "cuda": "l2"}), entry("new", {"cpu": "n1", "cuda": "n2"}), {"cpu", "cuda"}
    )
    assert chosen is not None and chosen.convert == "new" and chosen.missing == []


def test_an_incomplete_new_set_never_replaces_a_complete_entry() -> None:
    """A new MLC nightly whose compiles all fail: the previous entry keeps serving."""
    current = entry("old", {"cpu": "l1", "cuda": "l2"})
    assert next_entry(current, entry("new", {}), {"cpu", "cuda"}) is None
    assert next_entry(current, entry("new", {"cpu": "n1"}), {"cpu", "cuda"}) is None


def test_same_weights_gain_libraries_and_keep_the_ones_that_failed_tonight() -> None:
    current = entry("w", {"cpu": "l1", "cuda": "l2"})
    chosen = next_entry(current, entry("w", {"cpu": "n1"}), {"cpu", "cuda"})
    assert chosen is not None and {d: r.key for d, r in chosen.libs.items()} == {"cpu": "n1", "cuda": "l2"}
    assert next_entry(current, entry("w", {}), {"cpu", "cuda"}) is None  # nothing new: no write


def test_a_first_entry_may_be_partial_and_says_what_is_missing() -> None:
    chosen = next_entry(None, entry("w", {"cpu": "n1"}), {"cpu", "cuda"})
    assert chosen is not None and chosen.missing == ["cuda"]
    # A partial entry is replaced by new weights that cover at least its devices.
    assert next_entry(chosen, entry("w2", {"cpu": "x1"}), {"cpu", "cuda"}) is not None
    assert next_entry(chosen, entry("w2", {}), {"cpu", "cuda"}) is None


def built_library(model_a: Path, tmp_path: Path, *compile_env: str, quantization: str = "q4f16_1") -> tuple[Path, Path]:
    """A weights directory and a cpu library built by the toolchain double for them."""
    out, lib = tmp_path / "out", tmp_path / "lib.so"
    for args in (
        ["convert_weight", str(model_a), "--quantization", quantization, "--device", "cpu", "-o", str(out)],
        ["gen_config", str(model_a), "--quantization", quantization, "--conv-template", "LM", "-o", str(out)],
        ["compile", str(out / "mlc-chat-config.json"), "--device", "llvm", "--host", "x86_64-unknown-linux-gnu",
         "-o", str(lib)],
    ):  # fmt: skip
        env = {**os.environ, **dict(e.split("=", 1) for e in compile_env)} if args[0] == "compile" else None
        subprocess.run([sys.executable, "-m", "mlc_llm", *args], check=True, capture_output=True, env=env)
    return out, lib


CPU = DeviceSpec(name="cpu", family="cpu", target="llvm")


def docs(out: Path) -> tuple[dict, dict]:
    return json.loads((out / "tensor-cache.json").read_text()), json.loads((out / "mlc-chat-config.json").read_text())


@pytest.mark.slow
@pytest.mark.usefixtures("product_speed_timing")
def test_a_library_runs_through_mlc_engine_or_the_tvm_runtime(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, lib = built_library(model_a, tmp_path)
    meta, v = validate_library(lib, CPU, "a", *docs(out), out)
    assert meta is not None and v.fits.status == "passed" and v.run.status == "passed" and v.run.peak_memory_bytes
    decode, prefill, engine = v.run.speeds
    assert (decode.phase, prefill.phase, engine.phase) == ("decode", "prefill", "decode")
    # The headline is the VM's decode, measured the way the kernels run; MLCEngine's is a method of its own.
    assert v.run.method == decode.method and v.run.tokens_per_s == decode.tokens_per_s
    assert decode.steps == 128 and "logits left on the device" in decode.method  # a fast device: the full plan
    assert "after a warm-up run" in decode.method and speed.MIN_RUNS <= len(decode.runs) <= speed.MAX_RUNS
    assert decode.stopped in ("stable", f"{speed.MAX_RUNS} runs", "time budget")
    assert prefill.steps == 512 and prefill.tokens_per_s and decode.tokens_per_s
    assert engine.method.startswith("MLCEngine") and engine.tokens_per_s
    monkeypatch.setenv("MLC_DOUBLE_NO_RUNTIME", "1")  # a toolchain without libmlc_llm: the TVM runtime alone
    _, v = validate_library(lib, CPU, "a", *docs(out), out)
    assert v.run.status == "passed" and [s.method for s in v.run.speeds] == [decode.method, prefill.method]


class Clock:
    """time.perf_counter for the check's script, moved by the runs it times instead of by waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def timing_rules() -> tuple[dict, Clock]:
    """The timing rules of the check's script, run as the toolchain's interpreter runs it, on a clock of ours."""
    from mlc_farm.toolchain.invoke import SCRIPTS

    scope: dict = {"__name__": "run_library"}
    exec((SCRIPTS / "distributions.py").read_text() + (SCRIPTS / "run_library.py").read_text(), scope)
    clock = Clock()
    scope["time"] = clock
    return scope, clock


def test_the_timed_runs_stop_when_stable_or_when_the_budget_is_spent() -> None:
    scope, clock = timing_rules()
    plan = {**speed.PLAN, "seconds": 10.0}

    def runs(*seconds: float):
        left = iter(seconds)

        def one() -> float:
            took = next(left)
            clock.now += took
            return took

        return one

    # The first run of a set is the slowest (module load, allocations): a warm-up run, not counted.
    assert scope["timed"](runs(9.0, 1.0, 1.01, 1.02, 5.0), 100, plan) == ([1.0, 1.01, 1.02], "stable")
    assert scope["timed"](runs(*[1.0, 2.0] * 20), 100, plan) == ([2.0, 1.0] * 5, "10 runs")  # noise: at most 10
    assert scope["timed"](runs(9.0, 1.0, 2.0, 4.0, 1.0), 10, plan) == ([1.0], "time budget")  # at least one run
    assert scope["timed"](runs(1.0, 1.01, 1.02), 100, plan, True) == ([1.0, 1.01, 1.02], "stable")  # warmed up
    figure = scope["speed"]("decode", "m", 128, [1.0, 2.0, 4.0], "stable")
    assert figure == {"phase": "decode", "method": "m", "tokens_per_s": 64.0, "runs": [32.0, 64.0, 128.0],
                      "steps": 128, "stopped": "stable"}  # fmt: skip


def test_a_slow_device_is_timed_on_fewer_steps_within_its_share() -> None:
    scope, _ = timing_rules()
    plan = speed.PLAN

    def at(seconds_per_step: float):
        return lambda n: n * seconds_per_step

    # A fast device is timed on the whole plan; a slow one doubles the steps from the least only while the next
    # size's three runs fit its share; the slowest still times the plan's least. Any sizing run warms it up.
    assert scope["sized"](at(0.001), 128, 5.0, plan) == (128, True)
    assert scope["sized"](at(0.125), 128, 5.0, plan) == (8, True)  # 8 tokens/s: 3 runs of 16 steps take 6 s
    assert scope["sized"](at(0.02), 128, 5.0, plan) == (64, True)
    assert scope["sized"](at(10.0), 128, 5.0, plan) == (speed.MIN_STEPS, True)
    assert scope["sized"](at(0.001), 3, 5.0, plan) == (3, False)  # a context smaller than the least: no sizing
    assert speed.budget(20.0, 30) == 2.0 and speed.budget(600.0, 30) == 30 and speed.budget(0.5, 30) == 1.0
    assert speed.budget(20.0, 0.25) == 0.25  # the setting is the most, even below the least a fast compile gets


def test_a_slow_device_gets_a_check_within_its_budget(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The double's bandwidth turned down: a decode step takes ~60 ms (the old plan's 4 x 128 steps alone: 30 s).
    What the runs timed, by the script's own clock, stays within each phase's share of the budget."""
    from mlc_farm.checks.validate import run_library

    out, lib = built_library(model_a, tmp_path)
    weights = sum(p.stat().st_size for p in out.glob("params_shard_*.bin"))
    monkeypatch.setenv("MLC_DOUBLE_BANDWIDTH", str(weights / 0.06))
    budget = 2.0
    run = RunCheck(**run_library(lib, "cpu", out, 600, speed_seconds=budget)["run"])
    assert run.status == "passed", run.detail
    decode, prefill, engine = run.speeds
    assert decode.steps is not None and decode.steps < speed.DECODE_STEPS and decode.tokens_per_s
    for figure, share in ((decode, budget / 2), (prefill, budget / 4), (engine, budget / 4)):
        timed = sum((figure.steps or 0) / r for r in figure.runs)
        # Each phase stops at its first run past its share: at most one run over it.
        assert timed <= share + max((figure.steps or 0) / r for r in figure.runs), (figure, share)
        assert figure.stopped and figure.runs, figure


@pytest.mark.slow
@pytest.mark.usefixtures("product_speed_timing")
def test_a_4_bit_library_decodes_faster_than_a_16_bit_one_where_reading_weights_dominates(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The double's steps cost the time to read their weights: on a device where that dominates the loop around
    the kernels (as for a large model on a GPU), the speed check must see the 4x smaller weights."""
    monkeypatch.setenv("MLC_DOUBLE_BANDWIDTH", "1e8")
    monkeypatch.setenv("MLC_DOUBLE_NO_RUNTIME", "1")
    speeds = {}
    for quantization in ("q4f16_1", "q0f16"):
        out, lib = built_library(model_a, tmp_path / quantization, quantization=quantization)
        _, v = validate_library(lib, CPU, "a", *docs(out), out)
        speeds[quantization] = v.run.tokens_per_s or 0
    assert speeds["q4f16_1"] > 1.5 * speeds["q0f16"], speeds


def test_what_is_not_run_says_why(model_a: Path, tmp_path: Path) -> None:
    out, lib = built_library(model_a, tmp_path)
    for device, why in (
        (DeviceSpec(name="w", family="webgpu", target="webgpu"), "no webgpu device here"),
        (DeviceSpec(name="v", family="vulkan", target="vulkan:generic"), "no vulkan device"),
    ):
        meta, v = validate_library(lib, device, "a", *docs(out), out)
        assert meta is None and v.fits.status == "not checked" and v.run.status == "not run" and why in v.run.detail
        assert v.ok  # not run is not a failure, and not a pass either
    _, v = validate_library(lib, CPU, "a", *docs(out), None)
    assert v.fits.status == "passed" and v.run.status == "not run"


def test_a_device_the_toolchains_runtime_lacks_is_not_run_whatever_the_drivers(
    model_a: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Vulkan driver on the machine (an ICD the Vulkan loader is pointed at, as mesa's lavapipe installs one)
    and a toolchain whose runtime has no Vulkan (the PyPI TVM is built with USE_VULKAN=OFF; the double without
    MLC_DOUBLE_DEVICES): the library is not run, and says why, as the runtime said it. Where the runtime has the
    device, the same library runs."""
    out, _ = built_library(model_a, tmp_path)
    lib = tmp_path / "vulkan.so"
    subprocess.run([sys.executable, "-m", "mlc_llm", "compile", str(out / "mlc-chat-config.json"), "--device",
                    "vulkan:generic", "--host", "x86_64-unknown-linux-gnu", "-o", str(lib)], check=True,
                   capture_output=True)  # fmt: skip
    (icd := tmp_path / "lvp_icd.x86_64.json").write_text('{"file_format_version": "1.0.0"}')
    monkeypatch.setenv("VK_DRIVER_FILES", str(icd))
    vulkan = DeviceSpec(name="v", family="vulkan", target="vulkan:generic")
    meta, v = validate_library(lib, vulkan, "a", *docs(out), out)
    assert meta is None and v.run.status == "not run" and v.ok, v
    assert v.run.detail.startswith("no vulkan device in this toolchain's runtime (vulkan(0) does not exist for it")
    monkeypatch.setenv("MLC_DOUBLE_DEVICES", "vulkan")
    _, v = validate_library(lib, vulkan, "a", *docs(out), out)
    assert v.run.status == "passed" and v.fits.status == "passed", v


def test_bad_libraries_fail(model_a: Path, tmp_path: Path) -> None:
    out, lib = built_library(model_a, tmp_path, "MLC_DOUBLE_BAD_METADATA=1")
    _, v = validate_library(lib, CPU, "a", *docs(out), out)
    assert v.fits.status == "failed" and "qkv_proj.q_weight: shape [385, 16]" in v.fits.detail
    assert v.run.status == "failed" and "shape mismatch" in v.run.detail  # the runtime refuses it too
    out, lib = built_library(model_a, tmp_path / "nan", "MLC_DOUBLE_NAN=1")
    _, v = validate_library(lib, CPU, "a", *docs(out), out)
    assert v.fits.status == "passed" and v.run.status == "failed" and "non-finite logits" in v.run.detail
    lib.write_bytes(b"not a library")
    _, v = validate_library(lib, CPU, "a", *docs(out), out)
    assert not v.ok and "could not load the library" in v.run.detail
