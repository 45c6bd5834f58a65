"""The one retry layer (mlc_farm.errors.retry_transient): transient errors only, within a time budget."""

from __future__ import annotations

import time

import pytest

from mlc_farm.errors import BadInput, TransientError, retry_transient


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


def test_the_budget_bounds_time_and_attempts() -> None:
    call = Flaky(10**6, TransientError("5xx"))
    start = time.monotonic()
    with pytest.raises(TransientError):
        retry_transient(call, budget=2)
    assert time.monotonic() - start <= 2.5
    assert 2 <= call.calls <= 5  # 0.25-0.5 s, then 0.5-1 s, then 1-2 s apart


def test_a_custom_rule_decides_what_is_transient() -> None:
    call = Flaky(1, ValueError("429"))
    assert retry_transient(call, budget=30, transient=lambda e: "429" in str(e)) == "done"
    assert call.calls == 2
