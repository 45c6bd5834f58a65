"""Fidelity: every library measured against its source on its device (the double computes a Llama over the
weights it is given, like the real tool; shared/mlc-reference, "Next-token distributions through a library")."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from mlc_farm.building.preflight import preflight
from mlc_farm.building.run import MatrixRun, Progress, RunResult
from mlc_farm.checks import fidelity, fidelity_metrics
from mlc_farm.matrix import fidelity_rules
from mlc_farm.records.reads import entries
from mlc_farm.store import open_store
from mlc_farm.toolchain.probe import probe
from tests.test_run import InPlace, Told

MATRIX = """
quantizations: {quants}
devices:
  - {{name: cpu, family: cpu, target: llvm, pool: mlc-cpu}}
  - {{name: vulkan, family: vulkan, target: "vulkan:generic", pool: mlc-cpu}}
models:
  - {{id: tiny, source: {{path: models/a}}, conv_template: LM}}
{extra}
"""


def write_matrix(tiny_models: Path, tmp_path: Path, quants: str, extra: str = "") -> Path:
    path = tiny_models / f"fidelity-{tmp_path.name}.yaml"
    path.write_text(MATRIX.format(quants=quants, extra=extra))
    return path


def run(matrix: Path, store: Path) -> tuple[RunResult, Told]:
    pre = preflight(str(matrix), None, None, None, str(store), lambda st, p: probe())
    report = Told()
    return MatrixRun(pre, InPlace(pre.store()), False, Progress(), logging.getLogger("test"), report).execute(), report


def served(store: Path) -> dict[str, dict]:
    return {e.quantization: e.libs for e in entries(open_store(str(store)))}


def test_metrics_are_zero_for_the_same_distribution_and_grow_with_the_difference() -> None:
    ref = np.log(np.array([[0.5, 0.3, 0.1], [0.7, 0.2, 0.05]]))
    assert np.allclose(fidelity_metrics.kl_per_position(ref, ref), 0)
    worse = np.log(np.array([[0.3, 0.5, 0.1], [0.2, 0.7, 0.05]]))
    kl = fidelity_metrics.kl_per_position(ref, worse)
    assert (kl > 0.05).all()
    # the rest of the vocabulary is one bucket: 0.1 and 0.05 of mass the top 3 do not hold
    p, q = np.array([0.5, 0.3, 0.1, 0.1]), np.array([0.3, 0.5, 0.1, 0.1])
    assert kl[0] == pytest.approx(float((p * np.log(p / q)).sum()))


def test_thresholds_come_per_quantization_family_and_the_matrix_adjusts_them() -> None:
    assert fidelity_rules.thresholds("q0f16").min_top1 == 0.95 and fidelity_rules.thresholds("q0f16").max_kl == 0.01
    assert fidelity_rules.thresholds("q4f16_1").max_kl == 0.25 and fidelity_rules.thresholds("q4f16_1").min_top1 is None
    assert fidelity_rules.thresholds("q3f16_1").max_kl == 0.75
    mine = fidelity_rules.thresholds("q4f16_1", fidelity_rules.Rules(max_kl=0.1), fidelity_rules.Rules(gate=False))
    assert (mine.max_kl, mine.gate) == (0.1, False)
    m = fidelity.Measured(top1=0.5, kl_mean=0.3, kl_p99=1, ppl_reference=None, ppl_library=None, positions=8)
    assert fidelity.judge(m, fidelity_rules.thresholds("q4f16_1")) == (False, "KL 0.3000 > 0.25 (4-bit)")
    assert fidelity.judge(m, mine) == (True, "recorded, not gated: KL 0.3000 > 0.1 (4-bit)")  # recorded, not gated
    assert (
        fidelity.judge(m, fidelity_rules.thresholds("q4f16_1", fidelity_rules.Rules(max_kl=1)), previous_kl=0.1)[0]
        is False
    )


def test_the_text_goes_through_the_models_tokenizer_or_seeded_ids_say_so(tiny_models: Path) -> None:
    text = fidelity_metrics.eval_tokens(tiny_models / "models" / "a" / "tokenizer.json", 128, 1000)
    assert not text.seeded and len(text.tokens) == 129 and text.describe() == "fidelity-v1 text, 128 positions"
    too_long = fidelity_metrics.eval_tokens(tiny_models / "models" / "a" / "tokenizer.json", 8000, 1000)
    assert too_long.seeded and "tokens, 8001 are needed" in too_long.describe()
    none = fidelity_metrics.eval_tokens(None, 16, 1000)
    assert (
        none.seeded and none.tokens == fidelity_metrics.eval_tokens(None, 16, 1000).tokens
    )  # seeded: the same each time


@pytest.mark.slow
def test_each_library_is_measured_against_one_reference_per_source(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix, store = write_matrix(tiny_models, tmp_path, "[q0f32, q4f16_1, q3f16_1]"), tmp_path / "store"
    passes = tmp_path / "reference.log"
    monkeypatch.setenv("MLC_DOUBLE_REFERENCE_LOG", str(passes))
    done, _report = run(matrix, store)
    assert done.ok, done.message
    libs = served(store)
    q0 = libs["q0f32"]["cpu"].fidelity
    assert q0 is not None and q0.status == "passed" and q0.measured is not None
    assert q0.measured.top1 >= 0.99 and q0.measured.kl_mean < 1e-3
    assert q0.reference and q0.reference.startswith("transformers float32")
    assert q0.evaluation == "fidelity-v1 text, 128 positions"
    assert q0.measured.ppl_reference and q0.measured.ppl_library  # a text: its perplexity under both
    kl = {q: libs[q]["cpu"].fidelity.measured.kl_mean for q in libs}  # type: ignore[union-attr]
    assert kl["q0f32"] < kl["q4f16_1"] < kl["q3f16_1"]  # quantization damage, measured
    assert all(libs[q]["vulkan"].fidelity.status == "not measured" for q in libs)  # no vulkan here: no number
    assert len(passes.read_text().splitlines()) == 1  # one reference for 3 quantizations x 2 devices
    again, _ = run(matrix, store)
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")  # a new nightly: new libraries, new checks
    nightly, _ = run(matrix, store)
    assert again.ok and nightly.ok, nightly.message
    assert len(passes.read_text().splitlines()) == 1  # still the one reference


@pytest.mark.slow
def test_a_library_that_computes_another_function_fails_its_cell_and_is_never_served(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference's wrong-rope-base library: it fits its weights and runs; only fidelity sees it."""
    matrix, store = write_matrix(tiny_models, tmp_path, "[q0f16]"), tmp_path / "store"
    assert run(matrix, store)[0].ok
    catalog = {p: p.read_bytes() for p in (store / "catalog").rglob("*.json")}
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")
    monkeypatch.setenv("MLC_DOUBLE_ROPE_BASE", "1")
    done, report = run(matrix, store)
    assert not done.ok and "1 of 2 cells failed" in done.message
    assert "tiny q0f16 cpu: fidelity failed: top-1" in done.message and "KL" in done.message
    row = next(r for r in report.summaries[0].rows if r.device == "cpu")
    assert row.status == "failed" and "fits; ran on cpu" in row.validation  # every other check passed it
    assert {p: p.read_bytes() for p in (store / "catalog").rglob("*.json")} == catalog  # last night's keeps serving

    fresh = tmp_path / "fresh"
    assert not run(matrix, fresh)[0].ok
    assert "cpu" not in served(fresh)["q0f16"]  # never current, even with nothing else to serve


@pytest.mark.slow
def test_without_torch_the_highest_precision_build_is_the_reference_and_without_one_nothing_is_claimed(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_DOUBLE_NO_TORCH", "1")
    alone = write_matrix(tiny_models, tmp_path, "[q4f16_1]")
    done, report = run(alone, tmp_path / "alone")
    assert done.ok, done.message
    f = served(tmp_path / "alone")["q4f16_1"]["cpu"].fidelity
    assert f is not None and f.status == "not measured" and f.measured is None and "no reference" in f.detail
    assert all("fidelity not measured: no reference" in r.validation for r in report.summaries[0].rows)

    both = write_matrix(tiny_models, tmp_path, "[q0f16, q4f16_1]")
    done, _ = run(both, tmp_path / "both")
    assert done.ok, done.message
    libs = served(tmp_path / "both")
    assert libs["q0f16"]["cpu"].fidelity.status == "reference"  # type: ignore[union-attr]
    q4 = libs["q4f16_1"]["cpu"].fidelity
    assert q4 is not None and q4.status == "passed" and q4.reference == "q0f16 library on cpu"
    assert q4.measured is not None and 0.01 < q4.measured.kl_mean < 0.25


@pytest.mark.slow
def test_a_kl_regression_under_a_new_toolchain_fails_the_cell_and_keeps_the_previous_entry(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = "fidelity: {max_kl: 10, min_top1: 0}"  # only the regression rule can fail it
    matrix, store = write_matrix(tiny_models, tmp_path, "[q4f16_1]", loose), tmp_path / "store"
    first, _ = run(matrix, store)
    assert first.ok, first.message
    before = served(store)["q4f16_1"]["cpu"]
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")
    monkeypatch.setenv("MLC_DOUBLE_ROPE_BASE", "1")
    nightly, _report = run(matrix, store)
    assert not nightly.ok
    old = before.fidelity.measured.kl_mean  # type: ignore[union-attr]
    assert "under the previous one" in nightly.message and f"{old:.4f} under the previous" in nightly.message
    assert served(store)["q4f16_1"]["cpu"] == before  # the previous entry keeps serving


@pytest.mark.slow
def test_the_numbers_are_shown_wherever_the_validation_is(tiny_models: Path, tmp_path: Path) -> None:
    from mlc_farm.distribute.hub import manifest, model_card
    from tests.helpers import run_cli

    matrix, store = write_matrix(tiny_models, tmp_path, "[q0f16, q4f16_1]"), tmp_path / "store"
    assert run(matrix, store)[0].ok
    wide = {"COLUMNS": "300"}
    listed = run_cli("ls", "--store", str(store), env=wide)
    assert "tiny q4f16_1 cpu: fits; ran on cpu" in listed.stdout and "fidelity passed: top-1 0." in listed.stdout
    assert "tiny q4f16_1 vulkan: fit not checked" in listed.stdout and "fidelity not measured" in listed.stdout

    pulled = tmp_path / "pulled"
    assert run_cli("pull", "tiny", "q4f16_1", "-o", str(pulled), "--store", str(store)).returncode == 0
    checked = run_cli("validate", "tiny", "q4f16_1", "--dir", str(pulled), "--store", str(store), env=wide)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "passed: top-1 0." in checked.stdout and "vs transformers float32" in checked.stdout

    entry = next(e for e in entries(open_store(str(store))) if e.quantization == "q4f16_1")
    card = model_card(entry, "org/tiny-q4f16_1-MLC", {"cpu": "libs/cpu.so", "vulkan": "libs/vulkan.so"})
    row = next(line for line in card.splitlines() if line.startswith("| cpu | transformers float32"))
    kl = entry.libs["cpu"].fidelity.measured.kl_mean  # type: ignore[union-attr]
    assert "fidelity-v1 text, 128 positions" in row and f"{kl:.4g}" in row
    assert "| vulkan | not measured: " in card  # no driver ("did not run here"), or none in this runtime
    doc = manifest(open_store(str(store)), entry, {})
    assert doc["builds"]["libraries"]["cpu"]["fidelity"]["measured"]["kl_mean"] == kl

    planned = run_cli("plan", "--matrix", str(matrix), "--store", str(store), "--explain", env=wide)
    assert "fidelity of each cell:" in planned.stdout
    assert "tiny/q4f16_1/cpu: against transformers" in planned.stdout and "KL <= 0.25" in planned.stdout


@pytest.mark.slow
@pytest.mark.usefixtures("product_speed_timing")
def test_history_keeps_a_point_per_toolchain_and_lists_what_regressed(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import run_cli

    matrix, store = write_matrix(tiny_models, tmp_path, "[q4f16_1]"), tmp_path / "store"
    assert run(matrix, store)[0].ok
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev1")
    assert run(matrix, store)[0].ok  # (whether noise is taken for a drop: the next test, without timing)
    monkeypatch.setenv("MLC_DOUBLE_VERSION", "0.21.0.dev2")
    monkeypatch.setenv("MLC_DOUBLE_DECODE_SLEEP", "0.01")  # a kernel 20x slower: no load hides it
    slow, report = run(matrix, store)
    assert slow.ok and "1 regressions against the previous toolchain" in slow.message
    (line,) = report.summaries[0].regressions
    assert line.startswith("tiny q4f16_1 cpu: tokens/s down:") and "mlc_llm 0.21.0.dev1" in line
    shown = run_cli("history", "tiny", "q4f16_1", "cpu", "--store", str(store), env={"COLUMNS": "200"})
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert [v in shown.stdout for v in ("0.20.0.dev0", "0.21.0.dev1", "0.21.0.dev2")] == [True] * 3
    assert "regression: tokens/s down" in shown.stdout
    assert "a speed regression: tokens/s down by more than 10%, with every timed run below" in shown.stdout
    from mlc_farm.catalog.history import series
    from mlc_farm.records.reads import all_records

    libraries = series([r for _, r in all_records(open_store(str(store)))], by="library")
    cpu = [points for (_, label), points in libraries.items() if label == "llama q4f16_1 llvm"]
    assert [len(points) for points in cpu] == [3]  # the cpu library across the three toolchains
    unrun = run_cli("history", "tiny", "q4f16_1", "vulkan", "--store", str(store))  # no Vulkan device here
    assert unrun.returncode == 0 and "vulkan: checked, but its library did not run (no vulkan device" in " ".join(
        unrun.stdout.split()), unrun.stdout + unrun.stderr  # fmt: skip
    missing = run_cli("history", "nope", "q4f16_1", "--store", str(store))
    assert missing.returncode == 2 and "no checked build of nope q4f16_1" in missing.stderr


def test_a_speed_drop_within_the_spread_of_the_runs_is_no_regression() -> None:
    from datetime import datetime, timezone

    from mlc_farm.catalog.history import Point, regressions, speed_series

    def at(runs: list[float], kl: float = 0.05, memory: int = 100) -> Point:
        t = datetime.now(timezone.utc)
        return Point(toolchain=str(runs), at=t, tokens_per_s=sorted(runs)[len(runs) // 2], tokens_per_s_runs=runs,
                     kl_mean=kl, peak_memory_bytes=memory, check="k")  # fmt: skip

    assert regressions([at([100, 110, 120]), at([90, 95, 101])], 0.1) == []  # the ranges overlap: noise
    # A shared machine's 2%, even with every run below the old ones, is no regression; 20% is.
    assert regressions([at([100, 100.5, 101]), at([97.5, 98, 98.5])], 0.1) == []
    (slower,) = regressions([at([100, 100.5, 101]), at([80, 80.4, 80.8])], 0.1)
    assert slower.describe() == "tokens/s down: 100.5 -> 80.4 (20%: beyond 10% and the spread of the timed runs)"
    (drop,) = regressions([at([100, 110, 120]), at([80, 85, 99])], 0.1)
    assert drop.what == "tokens/s" and (drop.before, drop.after) == (110, 85)
    assert [r.what for r in regressions([at([100]), at([100], kl=0.2, memory=120)], 0.1)] == ["KL", "memory"]
    # Another method is another series: 499 tokens/s of a short loop reading logits back, then 231 measured on
    # the device, is no regression; the page draws the new series alone.
    old, new = at([499, 500, 501]), at([230, 231, 232])
    old.method, new.method = "8 steps, logits read back", "128 steps on the device"
    assert regressions([old, new], 0.1) == []
    assert speed_series([old, new]) == [new]
    assert regressions([at([100], kl=0.05), at([100], kl=0.1)], 0.1) == []  # within 2x + 0.01


def test_a_models_own_fidelity_section_adjusts_the_global_one(tiny_models: Path, tmp_path: Path) -> None:
    from mlc_farm.errors import MatrixError
    from mlc_farm.matrix.cells import expand
    from mlc_farm.matrix.load import load_matrix
    from mlc_farm.planning import sources
    from mlc_farm.planning.plan import make_plan

    text = MATRIX.format(quants="[q4f16_1]", extra="fidelity: {max_kl: 0.5, positions: 64}").replace(
        "conv_template: LM}", "conv_template: LM, fidelity: {max_kl: 0.05, gate: false}}"
    )
    path = tiny_models / f"own-{tmp_path.name}.yaml"
    path.write_text(text)
    loaded = load_matrix(path)
    srcs = sources.resolve(loaded, loaded.matrix.models)
    plan = make_plan(loaded.matrix, expand(loaded.matrix), srcs, probe())
    (cb,) = [b for b in plan.check_builds.values() if b.device.name == "cpu"]
    assert (cb.thresholds.max_kl, cb.thresholds.gate, cb.positions) == (0.05, False, 64)  # the model's, over all

    bad = tiny_models / f"bad-{tmp_path.name}.yaml"
    bad.write_text(MATRIX.format(quants="[q4f16_1]", extra="fidelity: {max_kl: -1, gates: false}"))
    with pytest.raises(MatrixError) as e:
        load_matrix(bad)
    assert "fidelity.max_kl" in str(e.value) and "fidelity.gates" in str(e.value)
