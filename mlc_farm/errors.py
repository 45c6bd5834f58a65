"""One error hierarchy: every error mlc-farm raises on purpose says what is wrong and what to do, is either
permanent (the same inputs fail the same way: never retried) or transient (a service hiccup: retried), and
carries the exit code the CLI ends with.

Exit codes: 0 done; 1 a build failed (or another permanent failure); 2 bad input; 3 a service (S3, the Hub,
the Prefect server) cannot be reached.
"""

from __future__ import annotations

import re
from pathlib import Path


class FarmError(Exception):
    """Base of the errors mlc-farm raises on purpose."""

    exit_code = 1


class PermanentError(FarmError):
    """Retrying gives the same result: fix the input, the data or the configuration."""


class TransientError(FarmError):
    """A service that failed for now (5xx, throttling, a dropped connection): worth retrying."""

    exit_code = 3


class BadInput(PermanentError):
    """Something a user gave (a matrix, a setting, an option, a path) that cannot be used."""

    exit_code = 2


class ServiceUnreachable(TransientError):
    """A service (S3, the Hub, a Prefect server) did not answer."""


class ClockSkew(FarmError):
    """A service refuses this machine's requests for its clock (S3 signatures): a service-side condition (exit
    3), but not one a retry within the budget cures, so never retried."""

    exit_code = 3


class NoWorker(TransientError):
    """A work pool that does not exist or that no worker polls: a run there would wait for ever."""


class Stopped(FarmError):
    """A wait ended because the process is being stopped (SIGINT/SIGTERM)."""


# The errors of each part, in one place: what a store, a matrix, the toolchain, a build, publishing or the
# local stack can fail with.


class StoreError(PermanentError):
    """The store cannot do what was asked (missing object, no permission): not worth a retry."""


class StoreUnavailable(ServiceUnreachable):
    """The store did not answer, or kept failing (5xx, throttling) after its own retries: worth a retry later."""


class MissingObject(StoreError):
    """An object the store was asked for is not there (a blob a record names, gone): every backend says so alike."""


class CorruptBlobError(StoreError):
    """A blob whose bytes do not match its sha256."""


class DamagedDocumentError(StoreError):
    """A store JSON document that does not parse: readers treat it as missing, so the next build rewrites it."""


class NotFound(BadInput):
    """What a command was asked for is not in the store (a model x quantization, a device, a build key): the
    name given is the problem, exit 2, in every command."""


class UnsafeStoreName(BadInput):
    """A store document holding a name that breaks the path rule (mlc_farm/names.py): a tampered store."""


class WriteConflict(TransientError):
    """Someone else wrote the object between our read and our write."""


class MatrixError(BadInput):
    """A matrix that cannot be built, with every problem found (file, field path, value, hint)."""

    def __init__(self, file: str, problems: list[str]):
        self.file = file
        self.problems = problems
        super().__init__(f"{file}: invalid matrix\n" + "\n".join(f"  - {p}" for p in problems))


class SelectionError(MatrixError):
    """A --model/--quantization/--device that names nothing in the matrix: said as such, not 'invalid matrix'."""

    def __init__(self, file: str, problems: list[str], lines: list[str]):
        super().__init__(file, problems)
        self.args = ("\n".join(lines),)

    def __str__(self) -> str:
        return str(self.args[0])


class NamesRejected(MatrixError):
    """Names of the matrix (conv templates, model types, quantizations) that the toolchain would reject."""


class ToolchainUnavailable(PermanentError):
    """No usable toolchain where the builds would run (or pools that run different ones)."""


class ToolchainError(PermanentError):
    """A toolchain step that failed: which step, for which cell, its exit code and the end of its log."""

    def __init__(self, step: str, cell: str, detail: str, log_tail: list[str], log_path: Path | None):
        self.step, self.cell, self.log_path = step, cell, log_path
        tail = "\n".join(f"    | {line}" for line in log_tail)
        super().__init__(f"{step} failed for {cell}: {detail}" + (f"\n  last log lines:\n{tail}" if tail else ""))


class LibraryLoadError(PermanentError):
    """The toolchain could not load the library at all."""


class RuntimeMismatch(PermanentError):
    """A library compiled by another mlc_llm/TVM (or for another GPU) than the local runtime: loading it would
    fail inside TVM, so it is refused first, in one line naming both sides."""


class BuildFailed(PermanentError):
    """A build that failed for a reason a retry will not fix; names where its log is kept."""

    def __init__(self, message: str, log: str | None):
        self.log = log
        super().__init__(message + (f"\n  full log: {log}" if log else ""))


class ValidationFailed(PermanentError):
    """A library that was built but does not fit its weights or does not run."""


class PublishError(PermanentError):
    """Publishing cannot go on (no org, no access, a refused commit); says what to do."""


class HubRefused(PermanentError):
    """The Hugging Face Hub answered no (a gated, missing, disabled or refused repo, a bad name): asking again
    gives the same answer."""


class HubConflict(TransientError):
    """A Hub commit whose parent moved (HTTP 412: someone pushed since the repo was read): read it again."""


class NothingToExport(PermanentError):
    """No library of the catalog (or of --model) is for the runtime asked: an empty config would look fine."""


class StackError(PermanentError):
    """A service that would not start; carries the end of its log."""


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]*@")


_SECRETS: set[str] = set()  # values read from Prefect blocks (credentials.py), never shown


def remember_secret(value: str | None) -> None:
    """A secret this process holds (a block's value): `redact_urls` hides it wherever it would appear."""
    if value and len(value) >= 8:
        _SECRETS.add(value)


# A URL query parameter that carries a credential (a presigned URL's signature, `?token=`, `api_key=`...).
_SECRET_PARAM = re.compile(
    r"(?i)([?&](?:[a-z0-9_.-]*(?:token|secret|signature|credential|password|passwd|key))=)[^&\s'\"]*"
)
_SECRET_ENV = ("HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")  # read where a client may echo them


def redact_urls(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://***@host` wherever it appears, a credential in a URL's query
    (`?token=...`, `X-Amz-Signature=...`) -> `***`, and any secret read from a block or from the environment
    (HF_TOKEN, the AWS secret key) -> `***`: no message, log or page ever shows credentials, whatever a client's
    exception put in its text."""
    import os

    text = _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1***@", text))
    for secret in (*_SECRETS, *(v for name in _SECRET_ENV if len(v := os.environ.get(name, "")) >= 8)):
        text = text.replace(secret, "***")
    return text
