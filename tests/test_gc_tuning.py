"""`mlc_farm.gc_tuning.fewer_full_collections`: full collections further apart for a run, then as they were."""

from __future__ import annotations

import gc

import pytest

from mlc_farm.gc_tuning import FULL_EVERY, fewer_full_collections


@pytest.fixture(autouse=True)
def _thresholds_kept() -> object:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_full_collections_further_apart_in_the_block_and_as_they_were_after() -> None:
    gc.set_threshold(700, 10, 10)
    with fewer_full_collections():
        assert gc.get_threshold() == (700, 10, FULL_EVERY)  # young collections as often as before
    assert gc.get_threshold() == (700, 10, 10)


def test_never_more_often_than_before_and_restored_after_a_failure() -> None:
    gc.set_threshold(500, 20, 1000)
    with pytest.raises(RuntimeError), fewer_full_collections():
        assert gc.get_threshold() == (500, 20, 1000)
        raise RuntimeError
    assert gc.get_threshold() == (500, 20, 1000)


def test_a_run_s_steps_have_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning with the look-ups (`prepare`) and the catalog, report and page (`complete`), whoever runs them (a
    flow, or `mlc-farm build` with nothing to build)."""
    from mlc_farm.building import run

    seen: list[int] = []

    def stop(*_: object) -> None:
        seen.append(gc.get_threshold()[2])
        raise ZeroDivisionError

    monkeypatch.setattr(run, "accept_steps", stop)  # the first thing `prepare` does
    steps = type("Steps", (), {"dispatch": stop})()  # the first thing `complete` does
    gc.set_threshold(700, 10, 10)
    with pytest.raises(ZeroDivisionError):
        run.MatrixRun.prepare(steps)  # type: ignore[arg-type]
    with pytest.raises(ZeroDivisionError):
        run.MatrixRun.complete(steps, None)  # type: ignore[arg-type]
    assert seen == [FULL_EVERY, FULL_EVERY] and gc.get_threshold() == (700, 10, 10)
