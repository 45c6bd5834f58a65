"""The Hub's errors in the farm's words (mlc_farm/huggingface/errors.py), like S3's in tests/test_s3_errors.py:
every error class of huggingface_hub and of its HTTP client leaves the adapter as the farm's, an answer worth
another attempt is exactly what the retry rule retries, and what the Hub refuses says what to do."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from huggingface_hub import errors as hf

from mlc_farm.errors import FarmError, HubConflict, HubRefused, ServiceUnreachable
from mlc_farm.huggingface.errors import HTTPError, hub_errors, transient

CLIENT = __import__(HTTPError.__module__.split(".")[0])  # the HTTP client under huggingface_hub (httpx's API)
REQUEST = CLIENT.Request("POST", "https://hub.example/api/models/org/name/commit/main")
CLASSES = sorted(
    (c for c in vars(hf).values() if inspect.isclass(c) and issubclass(c, BaseException)), key=lambda c: c.__name__
)
TRANSPORT = [CLIENT.ConnectError, CLIENT.ReadTimeout, CLIENT.RemoteProtocolError, CLIENT.ReadError]


def answer(status: int, cls: type[Any] = hf.HfHubHTTPError) -> BaseException:
    return cls(f"{status}", response=CLIENT.Response(status, request=REQUEST))


def instance(cls: type[BaseException]) -> BaseException:
    """One of each class, made as huggingface_hub makes it: an HTTP error with its answer, others with text."""
    if issubclass(cls, hf.HfHubHTTPError):
        return answer(400, cls)
    result = type("Result", (), {"stderr": "boom", "exit_code": 1, "timed_out": False, "signal": None})()
    for args in (("boom",), ("boom", "there"), ("boom", ValueError("cause")), ("boom", result)):
        try:
            return cls(*args)
        except (TypeError, AttributeError):
            continue
    raise AssertionError(f"cannot make a {cls.__name__}")


def through(error: BaseException, writing: bool = False) -> BaseException:
    with pytest.raises(BaseException) as caught, hub_errors("org/name", None, "main", writing=writing):
        raise error
    return caught.value


@pytest.mark.parametrize("cls", CLASSES + TRANSPORT, ids=lambda c: c.__name__)
def test_every_error_class_leaves_as_the_farms(cls: type[BaseException]) -> None:
    error = instance(cls) if cls not in TRANSPORT else cls("dropped", request=REQUEST)
    left = through(error)
    assert isinstance(left, FarmError), f"{cls.__name__} left as {type(left).__name__}"
    assert left.__suppress_context__ and str(left)
    if isinstance(error, (*TRANSPORT, hf.OfflineModeIsEnabled, hf.LocalEntryNotFoundError)):
        assert isinstance(left, ServiceUnreachable), cls.__name__


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422, 429, 500, 502, 503, 504])
def test_each_answer_is_retried_exactly_when_it_is_a_service_failure(status: int) -> None:
    left = through(answer(status), writing=True)
    expected = ServiceUnreachable if status >= 500 or status == 429 else HubConflict if status == 412 else HubRefused
    assert type(left) is expected, (status, left)
    assert transient(answer(status)) == (expected is ServiceUnreachable)
    if expected is HubRefused:
        assert f"HTTP {status}" in str(left) and "HF_TOKEN can write" in str(left)


def test_a_refused_repo_says_what_to_do_and_the_upload_threads_wrapping_is_seen_through() -> None:
    assert "accept its license on the Hub and set HF_TOKEN" in str(through(answer(401, hf.GatedRepoError)))
    assert "was not found (or is private: set HF_TOKEN)" in str(through(answer(404, hf.RepositoryNotFoundError)))
    assert "has no revision 'main'" in str(through(answer(404, hf.RevisionNotFoundError)))
    wrapped = RuntimeError("An error occurred while uploading")
    wrapped.__cause__ = answer(503)
    assert isinstance(through(wrapped, writing=True), ServiceUnreachable)
    plain = RuntimeError("a bug of ours")  # not the Hub's: it stays what it is
    assert through(plain) is plain
    assert not transient(hf.OfflineModeIsEnabled("offline")) and transient(CLIENT.ConnectError("x", request=REQUEST))
