"""The one retry layer (mlc_farm.retry.retry_transient): transient errors only, within a time budget."""

from __future__ import annotations

import pytest

from mlc_farm.errors import BadInput, TransientError
from mlc_farm.retry import Backoff, retry_transient


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


def test_a_wait_the_service_asks_for_is_waited_at_least_or_not_at_all() -> None:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    from mlc_farm.huggingface.errors import retry_after

    def limited(headers: dict[str, str]) -> HfHubHTTPError:
        request = httpx.Request("POST", "https://hub.example/api/models/o/n/commit/main")
        return HfHubHTTPError("429", response=httpx.Response(429, headers=headers, request=request))

    assert retry_after(limited({"Retry-After": "7"})) == 7
    # A date is read against the answer's own Date: this machine's clock, however wrong, does not matter.
    dated = {"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT", "Date": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert retry_after(limited(dated)) == 30
    assert retry_after(limited({})) is None and retry_after(limited({"Retry-After": "soon"})) is None
    now, waits = [0.0], []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    call = Flaky(2, TransientError("429"))
    assert retry_transient(call, budget=30, clock=lambda: now[0], sleep=sleep, asked_wait=lambda _e: 7.0) == "done"
    assert waits == [7.0, 7.0]  # at least what it asked, though the backoff's own step was shorter
    call, waits[:] = Flaky(2, TransientError("429")), []
    with pytest.raises(TransientError):
        retry_transient(call, budget=30, clock=lambda: now[0], sleep=sleep, asked_wait=lambda _e: 60.0)
    assert waits == [] and call.calls == 1  # beyond the budget: given up at once, not waited in vain
