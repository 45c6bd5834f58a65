"""The Hub's errors in the farm's words, in one table and one context manager (as store/s3_errors.py for S3):
no huggingface_hub error leaves the adapter. 5xx, 429 and dropped connections are ServiceUnreachable (retried
within MLC_FARM_RETRY_SECONDS where the farm retries, waiting at least what `Retry-After` asks, then exit 3);
offline mode is ServiceUnreachable too; a commit whose parent moved is HubConflict; a gated, missing or refused
repo is HubRefused (permanent, with what to do). Messages never hold the token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TypeVar

from huggingface_hub import errors as hf

from mlc_farm.errors import HubConflict, HubRefused, ServiceUnreachable
from mlc_farm.huggingface.endpoint import HUB
from mlc_farm.retry import retry_transient
from mlc_farm.settings import load_settings

T = TypeVar("T")

# The HTTP client's base error under huggingface_hub (httpx's): its HTTP errors derive from it.
HTTPError: type[Exception] = hf.HTTPError  # type: ignore[attr-defined]
# An error of the HTTP client under huggingface_hub (a connection refused, reset or timed out), or of the
# standard library's sockets: the Hub was not reached.
DROPPED: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, hf.LocalEntryNotFoundError)


def status_of(error: BaseException) -> int:
    """The HTTP status of a Hub answer (0: no answer)."""
    response = getattr(error, "response", None) if isinstance(error, hf.HfHubHTTPError) else None
    return int(response.status_code) if response is not None else 0


def transient(error: BaseException) -> bool:
    """Worth another attempt: 5xx, 429, and a connection the HTTP client lost (not an HTTP answer)."""
    if isinstance(error, hf.HfHubHTTPError):
        return status_of(error) >= 500 or status_of(error) == 429
    return isinstance(error, (HTTPError, ConnectionError, TimeoutError)) and not isinstance(
        error, hf.OfflineModeIsEnabled
    )


def retry_after(error: BaseException) -> float | None:
    """The seconds a Hub answer's `Retry-After` asks to wait: a number, or an HTTP date (read against the answer's
    own `Date`, so this machine's clock does not matter); None when it asks nothing."""
    response = error.response if isinstance(error, hf.HfHubHTTPError) else None
    value = (response.headers.get("Retry-After") or "").strip() if response is not None else ""
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        sent = parsedate_to_datetime(response.headers["Date"]) if response and "Date" in response.headers else None
    except (TypeError, ValueError, IndexError):
        return None
    now = sent or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds()) if when.tzinfo and now.tzinfo else None


def with_backoff(call: Callable[[], T]) -> T:
    """A Hub call huggingface_hub does not retry itself, under the one retry layer (MLC_FARM_RETRY_SECONDS),
    waiting at least what a 429 or 503's Retry-After asks."""
    return retry_transient(call, transient=transient, asked_wait=retry_after)


def farm_error(
    error: BaseException, repo: str, endpoint: str | None, revision: str | None = None, writing: bool = False
) -> BaseException:
    """The farm's error for a huggingface_hub one about `repo` (read at `revision`, or `writing` to it); others as
    they are. Upload threads wrap the HTTP error in a RuntimeError: its cause is what the Hub said."""
    if isinstance(error, RuntimeError) and isinstance(error.__cause__, HTTPError):
        error = error.__cause__
    if isinstance(error, hf.OfflineModeIsEnabled):
        return ServiceUnreachable(f"{repo}: the Hub is not asked offline (HF_HUB_OFFLINE is set)")
    if isinstance(error, hf.HfHubHTTPError):
        return _answered(error, repo, revision, writing)
    if isinstance(error, hf.HFValidationError):
        return HubRefused(f"{repo!r} is not a name the Hub accepts: {error}")
    if isinstance(error, (*DROPPED, HTTPError)):
        return ServiceUnreachable(
            f"cannot reach the Hugging Face Hub at {endpoint or HUB} ({type(error).__name__}: {error}); check "
            "HF_ENDPOINT and the network"
        )
    if type(error).__module__.startswith("huggingface_hub"):
        return HubRefused(f"the Hub's client failed for {repo} ({type(error).__name__}: {error})")
    return error


def _answered(error: hf.HfHubHTTPError, repo: str, revision: str | None, writing: bool) -> Exception:
    status, budget = status_of(error), load_settings().retry_seconds
    found: dict[type[BaseException], str] = {
        hf.GatedRepoError: f"{repo} is gated: accept its license on the Hub and set HF_TOKEN",
        hf.RepositoryNotFoundError: f"{repo} was not found (or is private: set HF_TOKEN)",
        hf.RevisionNotFoundError: f"{repo} has no revision {revision!r}",
        hf.RemoteEntryNotFoundError: f"{repo}@{revision or 'main'} lacks a file it needs",
        hf.DisabledRepoError: f"{repo} has been disabled on the Hub",
    }
    for cls, message in found.items():  # most derived first: GatedRepoError is a RepositoryNotFoundError
        if isinstance(error, cls):
            return HubRefused(message)
    if status == 429:
        return ServiceUnreachable(
            f"the Hub is rate-limiting {repo}: it still answered 429 after {budget:g} s of retries "
            "(MLC_FARM_RETRY_SECONDS), or asked to wait beyond them; try again later"
        )
    if status >= 500 or status == 0:
        said = f"HTTP {status}" if status else "no answer"
        return ServiceUnreachable(
            f"the Hub kept failing {repo} ({said}) for {budget:g} s of retries (MLC_FARM_RETRY_SECONDS); try "
            "again later"
        )
    if status == 412:
        return HubConflict(f"{repo} changed on the Hub since it was read (HTTP 412)")
    if writing:
        exists = " and that the organization exists" if status in (401, 403, 404) else ""
        return HubRefused(f"the Hub refused {repo} (HTTP {status}): check that HF_TOKEN can write to it{exists}")
    token = ": check HF_TOKEN" if status in (401, 403) else ""
    return HubRefused(f"the Hub refused {repo}@{revision or 'main'} (HTTP {status}){token}")


@contextlib.contextmanager
def hub_errors(repo: str, endpoint: str | None, revision: str | None = None, writing: bool = False) -> Iterator[None]:
    """Every huggingface_hub error raised in the block (and its HTTP client's) leaves it as the farm's."""
    try:
        yield
    except Exception as e:
        raised = farm_error(e, repo, endpoint, revision, writing)
        if raised is e:
            raise
        raise raised from None
