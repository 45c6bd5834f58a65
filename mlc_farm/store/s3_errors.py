"""S3's errors in the farm's words, in one table and one context manager (as httpx's `map_exceptions`): no
botocore error leaves the S3 store. 5xx, throttling and dropped connections are StoreUnavailable (retried
within the budget, then exit 3); a clock S3 refuses is ClockSkew; a missing object is MissingObject (the store
turns it into None where absence is an answer); a conditional write that lost is WriteConflict; the rest is
StoreError with the code, never with credentials in it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from mlc_farm.errors import ClockSkew, CorruptBlobError, MissingObject, StoreError, StoreUnavailable, WriteConflict
from mlc_farm.retry import is_transient

Kind = Literal["missing", "no bucket", "denied", "throttled", "conflict", "bad digest", "invalid range"]
_TABLE: dict[Kind, tuple[str, ...]] = {
    "missing": ("NoSuchKey", "404", "NotFound", "NoSuchUpload"),
    "no bucket": ("NoSuchBucket",),
    "denied": ("AccessDenied", "403", "SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken", "InvalidToken",
               "AllAccessDisabled", "AccountProblem"),
    "throttled": ("SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "ServiceUnavailable", "503",
                  "InternalError", "RequestTimeout"),
    "conflict": ("PreconditionFailed", "412", "ConditionalRequestConflict", "409", "OperationAborted"),
    "bad digest": ("BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"),
    "invalid range": ("InvalidRange", "416"),
}  # fmt: skip
CODES: dict[str, Kind] = {code: kind for kind, codes in _TABLE.items() for code in codes}
SKEW_LIMIT = 900  # seconds: S3 refuses a signature more than 15 minutes off its clock


class InvalidRange(StoreError):
    """A byte range the object does not have (an empty object has no byte 0)."""


def code_of(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", "unknown"))


def clock_skew(e: ClientError) -> float | None:
    """This machine's clock minus the store's, when a refusal is for that (RequestTimeTooSkewed, or an answer
    whose `Date` is more than 15 minutes off ours: S3 refuses such signatures whatever the code says)."""
    date = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        theirs = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        theirs = None
    skew = (datetime.now(timezone.utc) - theirs).total_seconds() if theirs and theirs.tzinfo else None
    if code_of(e) == "RequestTimeTooSkewed" or (skew is not None and abs(skew) > SKEW_LIMIT):
        return skew if skew is not None else 0.0
    return None


# A connection dropped, refused, cut or timed out: botocore's and the standard library's.
DROPPED = (BotoConnectionError, HTTPClientError, IncompleteReadError, ConnectionError, TimeoutError)


def dropped(error: BaseException) -> bool:
    """A dropped connection, beside the farm's own allow-list of transient errors."""
    return is_transient(error) or isinstance(error, DROPPED)


def no_bucket(where: str, bucket: str) -> StoreError:
    return StoreError(f"bucket {bucket!r} does not exist at {where}: create it or fix MLC_FARM_STORE")


def farm_error(e: BaseException, where: str, bucket: str, what: str) -> BaseException:
    """The farm's error for a botocore one (`where`: the bucket and endpoint, for messages); others as they are."""
    if isinstance(e, ClientError):
        return _client_error(e, where, bucket, what)
    if isinstance(e, DROPPED):
        return StoreUnavailable(
            f"{where} kept dropping the connection ({type(e).__name__}) while {what}; try again later"
        )
    if isinstance(e, BotoCoreError):
        return StoreError(f"{where}: {type(e).__name__} while {what}: {e}")
    return e


def _client_error(e: ClientError, where: str, bucket: str, what: str) -> Exception:
    code = code_of(e)
    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    kind = CODES.get(code)
    if status >= 500 or status == 429 or kind == "throttled":
        said = f"HTTP {code}" if code.isdigit() else code
        return StoreUnavailable(f"{where} kept failing ({said}) while {what}; try again later")
    if status == 403 and (skew := clock_skew(e)) is not None:
        return ClockSkew(
            f"the local clock is {skew:+.0f} s off the store's ({where}); requests are refused (S3 rejects a "
            f"signature more than 15 minutes off): set this machine's clock right (NTP), then run again"
        )
    if kind == "denied":
        return StoreError(
            f"access denied ({code}) to {where} while {what}: check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket policy"
        )
    found: dict[Kind | None, Exception] = {
        "no bucket": no_bucket(where, bucket),
        "missing": MissingObject(f"{where}: nothing there while {what}"),
        "conflict": WriteConflict(f"{where}: another writer changed it while {what}"),
        "bad digest": CorruptBlobError(f"{where}: the bytes sent were not the bytes read while {what}"),
        "invalid range": InvalidRange(f"{where}: no such byte range while {what}"),
    }
    return found.get(kind) or StoreError(f"S3 error {code} from {where} while {what}")


@contextlib.contextmanager
def s3_errors(where: str, bucket: str, what: str) -> Iterator[None]:
    """Every botocore error raised in the block leaves it as the farm's (`farm_error`)."""
    try:
        yield
    except (ClientError, BotoCoreError, *DROPPED) as e:
        raise farm_error(e, where, bucket, what) from None
