"""S3's errors in one table (mlc_farm/store/s3_errors.py): every botocore error the S3 store can meet leaves
it as one of the farm's, in words a user can act on and with no secret in them."""

from __future__ import annotations

import inspect
import re
import string
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import botocore.exceptions as boto
import pytest

from mlc_farm.errors import (
    ClockSkew,
    CorruptBlobError,
    FarmError,
    MissingObject,
    StoreError,
    StoreUnavailable,
    WriteConflict,
)
from mlc_farm.settings import load_settings
from mlc_farm.store.s3 import S3Store
from mlc_farm.store.s3_errors import CODES, InvalidRange, farm_error, s3_errors

SECRET = "wJalrXUtnFEMI-not-a-real-secret-7"
WHERE = "s3://bucket at http://127.0.0.1:9"


def botocore_errors() -> list[BaseException]:
    """An instance of every error class botocore defines (each message's fields filled in)."""
    found: list[BaseException] = []
    for _, cls in inspect.getmembers(boto, inspect.isclass):
        if not issubclass(cls, boto.BotoCoreError):
            continue
        fields = {name for _, name, _, _ in string.Formatter().parse(getattr(cls, "fmt", "")) if name}
        values: dict[str, Any] = dict.fromkeys(fields, "x")
        if "error" in fields:
            values["error"] = OSError("x")
        for name, param in inspect.signature(cls).parameters.items():  # a class's own arguments (WaiterError's)
            if param.default is param.empty and param.kind is param.POSITIONAL_OR_KEYWORD and name not in values:
                values[name] = {} if "response" in name else "x"
        found.append(cls(**values))
    return found


def client_error(code: str, status: int, date: datetime | None = None) -> boto.ClientError:
    headers = {"date": format_datetime(date, usegmt=True)} if date else {}
    response: Any = {"Error": {"Code": code, "Message": f"signed with {SECRET}"},
                     "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers}}  # fmt: skip
    return boto.ClientError(response, "PutObject")


@pytest.mark.parametrize("error", botocore_errors(), ids=lambda e: type(e).__name__)
def test_every_botocore_error_leaves_as_the_farms(error: BaseException) -> None:
    with pytest.raises(FarmError) as raised, s3_errors(WHERE, "bucket", "writing x"):
        raise error
    assert not isinstance(raised.value, boto.BotoCoreError | boto.ClientError)
    if isinstance(error, boto.ConnectionError | boto.HTTPClientError | boto.IncompleteReadError):
        assert isinstance(raised.value, StoreUnavailable) and "kept dropping the connection" in str(raised.value)
    else:
        assert isinstance(raised.value, StoreError) and type(error).__name__ in str(raised.value)


EXPECTED = {"missing": MissingObject, "no bucket": StoreError, "denied": StoreError, "throttled": StoreUnavailable,
            "conflict": WriteConflict, "bad digest": CorruptBlobError, "invalid range": InvalidRange}  # fmt: skip


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_of_the_table_is_its_kind_and_says_no_secret(code: str) -> None:
    status = int(code) if code.isdigit() else 400
    found = farm_error(client_error(code, status), WHERE, "bucket", "writing x")
    assert type(found) is EXPECTED[CODES[code]] or (status >= 500 and isinstance(found, StoreUnavailable))
    assert SECRET not in str(found)


def test_server_errors_throttling_skew_and_the_unknown() -> None:
    assert isinstance(farm_error(client_error("Whatever", 502), WHERE, "b", "x"), StoreUnavailable)
    assert isinstance(farm_error(client_error("TooManyRequests", 429), WHERE, "b", "x"), StoreUnavailable)
    skewed = farm_error(
        client_error("AccessDenied", 403, datetime.now(timezone.utc) + timedelta(hours=2)), WHERE, "b", "x"
    )
    assert isinstance(skewed, ClockSkew) and re.search(r"-7(199|200) s off", str(skewed))
    unknown = farm_error(client_error("NoSuchTagSet", 400), WHERE, "b", "reading x")
    assert type(unknown) is StoreError and str(unknown) == f"S3 error NoSuchTagSet from {WHERE} while reading x"


def test_the_store_retries_only_what_may_pass_and_never_leaks_a_botocore_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    store = S3Store("s3://bucket/p", load_settings().model_copy(update={"retry_seconds": 0.01}))
    calls: list[str] = []

    def failing(error: BaseException) -> Any:
        def request() -> None:
            calls.append(type(error).__name__)
            raise error

        return request

    with pytest.raises(StoreUnavailable):
        store._call("reading x", failing(client_error("SlowDown", 503)))
    with pytest.raises(WriteConflict):
        store._call("writing x", failing(client_error("PreconditionFailed", 412)))
    assert calls == ["ClientError", "ClientError"]  # a lost conditional write is the caller's to handle, at once
    for error in botocore_errors():
        with pytest.raises(FarmError):
            store._call("reading x", failing(error))
    assert store.read_json.__name__  # the store is still usable as an object
