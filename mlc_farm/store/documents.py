"""Reading a store document: JSON written by others, read as untrusted (damaged, truncated, not an object)."""

from __future__ import annotations

import json
from typing import Any

from mlc_farm.errors import DamagedDocumentError


def parse_document(where: str, raw: bytes | str) -> dict[str, Any]:
    """A store document's JSON, or DamagedDocumentError naming the object (truncated, not UTF-8, not an object)."""
    try:
        data = json.loads(raw)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise DamagedDocumentError(f"{where} is damaged ({e})") from None
    if not isinstance(data, dict):
        raise DamagedDocumentError(f"{where} is damaged (a JSON {type(data).__name__}, not an object)")
    return data
