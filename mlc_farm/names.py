"""One rule for every name that becomes a path or a Hub repo id, wherever it comes from: a matrix, the command
line, or the store, which whoever can write to the bucket writes too. Store documents declare their names with
the types here; a name that breaks the rule is `unsafe_name` (catalog.read_document refuses the document)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
_PATH_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_MD5 = re.compile(r"^[0-9a-f]{32}\Z")
UNSAFE = "unsafe_name"  # the pydantic error type of a name that breaks the rule


def shorten(value: object, limit: int = 60) -> str:
    """repr() of a value, cut to `limit` characters: an error never prints megabytes of a hostile input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}...({len(text)} chars)"


def unsafe(value: str, what: str) -> str | None:
    """Why a name cannot become a path component or a work pool (a '/', '..', NUL, newline, a huge length)."""
    if _SAFE_NAME.match(value) and ".." not in value:
        return None
    return f"{shorten(value)} is not a safe {what} (letters, digits, '.', '_', '-'; no '/' or '..'; at most 128)"


def unsafe_repo(value: str) -> str | None:
    """Why a Hub repo id is not ORG/NAME of safe names."""
    org, _, name = value.partition("/")
    if "/" not in value or unsafe(org, "") or unsafe(name, ""):
        return f"{shorten(value)} is not a Hugging Face repo id ORG/NAME of safe names (no '..')"
    return None


def unsafe_path(value: str) -> str | None:
    """Why a path is not relative and of plain components (no '..', NUL or newline)."""
    parts = value.split("/")
    if len(value) > 1024 or not all(_PATH_PART.match(p) and p not in (".", "..") for p in parts):
        return f"{shorten(value)} is not a safe relative path"
    return None


def _rule(check: object) -> AfterValidator:
    def validate(value: str) -> str:
        if problem := check(value):  # type: ignore[operator]
            raise PydanticCustomError(UNSAFE, "{problem}", {"problem": problem})
        return value

    return AfterValidator(validate)


def _pattern(pattern: re.Pattern[str], what: str) -> object:
    return lambda v: None if pattern.match(v) else f"{shorten(v)} is not {what}"


# Names in store documents.
Name = Annotated[str, _rule(lambda v: unsafe(v, "name"))]
RepoId = Annotated[str, _rule(unsafe_repo)]
RelPath = Annotated[str, _rule(unsafe_path)]
# A build key names `builds/<key>.json`: a safe name (the farm's own are 64 hex digits).
BuildKey = Annotated[str, _rule(lambda v: unsafe(v, "build key"))]
Sha256 = Annotated[str, _rule(_pattern(_SHA256, "a sha256"))]
Md5 = Annotated[str, _rule(_pattern(_MD5, "an md5 (32 hex digits)"))]
