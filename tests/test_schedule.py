"""The scheduler's rules, each on its own, without Prefect (plans from tests/test_plan.py's matrix)."""

from __future__ import annotations

from mlc_farm.schedule import Scheduler, to_build
from tests.test_plan import SOURCES, matrix, plan_of

PLAN = plan_of(matrix(), SOURCES)  # models base and tune (one architecture) x 2 quantizations x cpu, cuda


def kinds(started: list) -> list[str]:
    return sorted(b.kind for b, _ in started)


def finish_all(s: Scheduler, started: list, failing: set[str] = frozenset()) -> None:
    for b, _ in started:
        s.finish(b.key, b.key not in failing)


def test_reused_work_is_skipped_and_force_runs_everything() -> None:
    have = set(PLAN.convert_builds) | set(PLAN.lib_builds)
    assert to_build(PLAN, have.__contains__, force=False) == set(PLAN.config_builds)
    assert to_build(PLAN, have.__contains__, force=True) == set(PLAN.all_keys())
    s = Scheduler(PLAN, set(PLAN.config_builds))
    assert kinds(s.starts()) == ["config"] * 4 and s.waiting == []


def test_convert_and_config_start_at_once_libraries_wait_for_both() -> None:
    s = Scheduler(PLAN, set(PLAN.all_keys()))
    first = s.starts()
    assert kinds(first) == ["config"] * 4 + ["convert"] * 4
    configs = [(b, m) for b, m in first if b.kind == "config"]
    finish_all(s, configs)
    assert s.starts() == []  # configs alone are not enough: the library is validated with the weights
    finish_all(s, [(b, m) for b, m in first if b.kind == "convert"])
    libs = s.starts()
    assert kinds(libs) == ["library"] * 4 and all(m is not None and m.model == "base" for _, m in libs)


def test_a_failed_model_does_not_sink_a_shared_library() -> None:
    s = Scheduler(PLAN, set(PLAN.all_keys()))
    first = s.starts()
    base_converts = {b.key for b, _ in first if b.kind == "convert" and b.model == "base"}
    finish_all(s, first, failing=base_converts)
    libs = s.starts()
    assert len(libs) == 4 and {m.model for _, m in libs} == {"tune"}


def test_a_library_whose_models_all_failed_never_starts() -> None:
    s = Scheduler(PLAN, set(PLAN.all_keys()))
    first = s.starts()
    finish_all(s, first, failing={b.key for b, _ in first if b.kind == "convert"})
    assert s.starts() == [] and not s.running
    assert {lb.key for lb in s.never_started()} == set(PLAN.lib_builds)


def test_at_most_limit_builds_run_at_once() -> None:
    s = Scheduler(PLAN, set(PLAN.all_keys()), limit=3)
    ran = [b.key for b, _ in s.starts()]
    while s.running:
        assert len(s.running) <= 3
        s.finish(sorted(s.running)[0], True)
        ran += [b.key for b, _ in s.starts()]
    assert sorted(ran) == sorted(PLAN.all_keys())  # every build, each once
