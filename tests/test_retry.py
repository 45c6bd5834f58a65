"""The one retry layer (mlc_farm.errors.retry_transient): transient errors only, within a time budget."""

from __future__ import annotations

import pytest

from mlc_farm.errors import Backoff, BadInput, TransientError, retry_transient


class Flaky:
    def __init__(self, failures: int, error: Exception):
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "done"


def test_a_transient_failure_is_retried_until_it_passes() -> None:
    call = Flaky(2, ConnectionResetError("reset"))
    assert retry_transient(call, budget=30) == "done"
    assert call.calls == 3


def test_anything_not_on_the_allow_list_fails_at_once() -> None:
    for error in (BadInput("bad"), KeyError("bug"), ValueError("bug")):
        call = Flaky(5, error)
        with pytest.raises(type(error)):
            retry_transient(call, budget=30)
        assert call.calls == 1


def test_the_budget_bounds_time_and_attempts_by_the_clock_it_is_given() -> None:
    now, waits = [0.0], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    call = Flaky(10**6, TransientError("5xx"))
    with pytest.raises(TransientError):
        retry_transient(call, budget=120, clock=lambda: now[0], sleep=sleep, backoff=Backoff(first=0.5, cap=15))
    assert sum(waits) <= 120 and call.calls == len(waits) + 1
    steps = [min(0.5 * 2**i, 15) for i in range(len(waits))]
    assert all(step / 2 <= wait <= step for wait, step in zip(waits, steps, strict=True))  # jittered, doubling, capped
    assert 120 - sum(waits) <= 15  # it gave up only when the next wait would pass the budget


def test_a_custom_rule_decides_what_is_transient() -> None:
    call = Flaky(1, ValueError("429"))
    assert retry_transient(call, budget=30, transient=lambda e: "429" in str(e)) == "done"
    assert call.calls == 2
