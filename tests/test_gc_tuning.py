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


def test_a_run_has_them(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The run's steps (planning, the look-ups, the catalog) are inside the block."""
    from mlc_farm.building import run

    seen = []
    monkeypatch.setattr(run.MatrixRun, "prepare", lambda self: seen.append(gc.get_threshold()[2]) or 1 / 0)
    gc.set_threshold(700, 10, 10)
    with pytest.raises(ZeroDivisionError):
        run.MatrixRun.execute(object.__new__(run.MatrixRun))
    assert seen == [FULL_EVERY] and gc.get_threshold() == (700, 10, 10)
