"""The scheduler's rules, each on its own, without Prefect (plans from tests/test_plan.py's matrix)."""

from __future__ import annotations

from mlc_farm.planning.kinds import Build, all_builds
from mlc_farm.planning.schedule import Scheduler, to_build
from tests.test_plan import SOURCES, matrix, plan_of

PLAN = plan_of(matrix(), SOURCES)  # models base and tune (one architecture) x 2 quantizations x cpu, cuda


def kinds(started: list) -> list[str]:
    return sorted(b.kind for b, _ in started)


def finish_all(s: Scheduler, started: list, failing: set[str] = frozenset()) -> None:
    for b, _ in started:
        s.finish(b.key, b.key not in failing)


def test_reused_work_is_skipped_and_force_runs_everything() -> None:
    have = set(PLAN.convert_builds) | set(PLAN.lib_builds) | set(PLAN.check_builds)
    for workers in (1, 4):
        assert to_build(PLAN, have.__contains__, force=False, workers=workers) == set(PLAN.config_builds)
    assert to_build(PLAN, have.__contains__, force=True, workers=4) == set(all_builds(PLAN))
    s = Scheduler(PLAN, set(PLAN.config_builds))
    assert kinds(s.starts()) == ["config"] * 4 and s.waiting == []


def test_convert_and_config_start_at_once_libraries_wait_for_both() -> None:
    s = Scheduler(PLAN, set(all_builds(PLAN)))
    first = s.starts()
    assert kinds(first) == ["config"] * 4 + ["convert"] * 4
    configs = [(b, m) for b, m in first if b.kind == "config"]
    finish_all(s, configs)
    assert s.starts() == []  # configs alone are not enough: the library is validated with the weights
    finish_all(s, [(b, m) for b, m in first if b.kind == "convert"])
    libs = s.starts()
    assert kinds(libs) == ["library"] * 4 and all(m is not None and m.model == "base" for _, m in libs)


def test_a_failed_model_does_not_sink_a_shared_library() -> None:
    s = Scheduler(PLAN, set(all_builds(PLAN)))
    first = s.starts()
    base_converts = {b.key for b, _ in first if b.kind == "convert" and b.model == "base"}
    finish_all(s, first, failing=base_converts)
    libs = s.starts()
    assert len(libs) == 4 and {m.model for _, m in libs} == {"tune"}


def test_a_library_whose_models_all_failed_never_starts() -> None:
    s = Scheduler(PLAN, set(all_builds(PLAN)))
    first = s.starts()
    finish_all(s, first, failing={b.key for b, _ in first if b.kind == "convert"})
    assert s.starts() == [] and not s.running
    assert {b.key for b in s.never_started()} == set(PLAN.lib_builds) | set(PLAN.check_builds)


def test_at_most_limit_builds_run_at_once() -> None:
    s = Scheduler(PLAN, set(all_builds(PLAN)), slots={"local": 3})
    ran = [b.key for b, _ in s.starts()]
    while s.running:
        assert len(s.running) <= 3
        s.finish(sorted(s.running)[0], True)
        ran += [b.key for b, _ in s.starts()]
    assert sorted(ran) == sorted(all_builds(PLAN))  # every build, each once


def pool(b) -> str:
    return "gpu" if b.kind == "library" else "cpu"


def run(s: Scheduler, durations: dict[str, float]) -> tuple[float, list[str]]:
    """Simulate: every build takes its duration; returns the makespan and the start order."""
    clock, order, running = 0.0, [], {}
    while True:
        for b, _ in s.starts():
            running[b.key] = clock + durations.get(b.key, 0.0)
            order.append(b.key)
        if not running:
            return clock, order
        key = min(running, key=running.get)
        clock = running.pop(key)
        s.finish(key, True)


def test_the_longest_remaining_path_starts_first() -> None:
    """One weights slot, one GPU slot. The q0f16 cuda library takes 100 and waits for a q0f16 conversion
    (10); the q4f16_1 conversions take 50 and their libraries 5. The right order starts a q0f16 conversion
    first, so the long library runs while the q4f16_1 conversions do."""
    durations = {k: 0.0 for k in PLAN.config_builds}
    durations |= {k: 50.0 if b.quantization == "q4f16_1" else 10.0 for k, b in PLAN.convert_builds.items()}
    durations |= {
        k: 100.0 if (b.quantization, b.device.name) == ("q0f16", "cuda") else 5.0 for k, b in PLAN.lib_builds.items()
    }
    slots = {"cpu": 1, "gpu": 1}
    cp, order = run(Scheduler(PLAN, set(all_builds(PLAN)), slots, pool, durations), durations)
    fifo, _ = run(Scheduler(PLAN, set(all_builds(PLAN)), slots, pool, durations, order="fifo"), durations)
    first_convert = next(PLAN.convert_builds[k] for k in order if k in PLAN.convert_builds)
    assert first_convert.quantization == "q0f16"
    # The bound: the weights pool's work (2 x 50 + 2 x 10) plus the shortest tail after it (5): 125.
    assert cp <= 1.1 * 125 and fifo >= 1.2 * 125, (cp, fifo)


def test_a_library_whose_checks_are_long_compiles_first() -> None:
    """One GPU slot runs libraries and checks. Every library takes 5; the cuda cells' checks take 100, the cpu
    cells' 1: the cuda libraries compile first, so their long checks start early instead of last."""
    durations = {k: 5.0 for k in PLAN.lib_builds}
    durations |= {k: 100.0 if b.device.name == "cuda" else 1.0 for k, b in PLAN.check_builds.items()}

    def on_gpu(b: Build) -> str:
        return "gpu" if b.kind in ("library", "check") else "cpu"

    cp, order = run(Scheduler(PLAN, set(all_builds(PLAN)), {"gpu": 1}, on_gpu, durations), durations)
    fifo, _ = run(Scheduler(PLAN, set(all_builds(PLAN)), {"gpu": 1}, on_gpu, durations, order="fifo"), durations)
    assert next(PLAN.lib_builds[k] for k in order if k in PLAN.lib_builds).device.name == "cuda"
    assert cp <= fifo, (cp, fifo)


def test_a_pool_never_idles_while_work_for_it_is_ready() -> None:
    s = Scheduler(PLAN, set(all_builds(PLAN)), {"cpu": 1, "gpu": 2}, pool)
    first = s.starts()
    assert len(first) == 1  # one weights slot
    while not any(b.kind == "library" for b in (PLAN.lib_builds.get(k) for k in s.running) if b):
        for key in list(s.running):
            s.finish(key, True)
        s.starts()
        if not s.running:
            break
    # Once a library is ready, it runs on the GPU pool while the weights pool keeps converting.
    pools = sorted(s.running.values())
    assert "gpu" in pools and ("cpu" in pools or not s.ready)


def test_the_night_report_names_pool_use_and_the_longest_chain() -> None:
    from mlc_farm.report.night import night_report

    convert = next(b for b in PLAN.convert_builds.values() if (b.model, b.quantization) == ("base", "q0f16"))
    config = next(b for b in PLAN.config_builds.values() if (b.model, b.quantization) == ("base", "q0f16"))
    lib = next(b for b in PLAN.lib_builds.values() if (b.quantization, b.device.name) == ("q0f16", "cuda"))
    other = next(b for b in PLAN.convert_builds.values() if (b.model, b.quantization) == ("tune", "q4f16_1"))
    spans = {convert.key: (0.0, 10.0), config.key: (0.0, 1.0), lib.key: (10.0, 110.0), other.key: (10.0, 60.0)}
    labels = {convert.key: "convert", config.key: "config", lib.key: "library", other.key: "other"}
    pools = {k: "gpu" if k == lib.key else "cpu" for k in spans}
    night = night_report(PLAN, spans, pools, {"cpu": 2, "gpu": 1}, labels, wall=110.0)
    assert night.longest_chain == ["convert", "library"] and night.longest_chain_seconds == 110.0
    use = {p.pool: p for p in night.pools}
    assert use["cpu"].busy_seconds == 61.0 and use["cpu"].builds == 3
    assert abs(use["cpu"].utilisation - 61 / 220) < 1e-9 and abs(use["gpu"].utilisation - 100 / 110) < 1e-9
    assert "| gpu | 1 | 1 | 1:40 | 91% |" in night.markdown()
    assert night.line().startswith("wall 1:50; build time cpu 1:01 (28%), gpu 1:40 (91%); longest chain 1:50")


def test_a_check_waits_for_its_library_weights_and_reference_and_never_starts_without_them() -> None:
    """Without transformers, each model's q0f16 check on a device is the reference of its q4f16_1 check."""
    s = Scheduler(PLAN, set(all_builds(PLAN)))
    weights = s.starts()
    finish_all(s, weights)
    libs = s.starts()
    assert kinds(libs) == ["library"] * 4
    finish_all(s, libs)
    first = s.starts()
    assert {b.role for b, _ in first} == {"reference"} and {b.quantization for b, _ in first} == {"q0f16"}
    failing = {b.key for b, _ in first if b.model == "base" and b.device.name == "cuda"}
    finish_all(s, first, failing)
    second = s.starts()
    assert {(b.model, b.device.name) for b, _ in second} == {("base", "cpu"), ("tune", "cpu"), ("tune", "cuda")}
    finish_all(s, second)
    assert [(b.model, b.quantization, b.device.name) for b in s.never_started()] == [("base", "q4f16_1", "cuda")]
