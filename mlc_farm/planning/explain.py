"""Why a build is still to do: which of its inputs differ from the closest build the store has (pure).

An unexpected rebuild (a new source commit, a toolchain that moved, a template edit, a host change) is then
visible in `mlc-farm plan --explain` before it costs GPU hours.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from mlc_farm.records.schema import BuildRecord


class Explanation(BaseModel):
    key: str
    closest: str | None  # the stored build compared with, or None when the store has none of this kind
    built_at: str | None = None
    changes: list[str]


def differences(wanted: Any, stored: Any, path: str = "") -> list[str]:
    """`path: stored -> wanted` for every leaf where two input documents differ."""
    if isinstance(wanted, dict) and isinstance(stored, dict):
        out = []
        for k in sorted(set(wanted) | set(stored), key=str):
            out += differences(wanted.get(k), stored.get(k), f"{path}.{k}" if path else str(k))
        return out
    if wanted == stored:
        return []
    return [f"{path}: {_short(stored)} -> {_short(wanted)}"]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 50 else text[:40] + "..."


def _same_model(inputs: dict[str, Any], record: BuildRecord) -> bool:
    return bool(inputs.get("source")) and inputs.get("source", {}).get("ref") == record.inputs.get("source", {}).get(
        "ref"
    )


def closest_build(key: str, inputs: dict[str, Any], records: list[BuildRecord]) -> Explanation:
    """Compare a build's inputs with the stored builds of its kind; the closest (fewest differences, the same
    source first) says what changed."""
    kind = inputs.get("kind")
    candidates = [r for r in records if r.inputs.get("kind") == kind]
    if not candidates:
        return Explanation(key=key, closest=None, changes=[f"the store has no {kind} build yet"])
    best = min(candidates, key=lambda r: (not _same_model(inputs, r), len(differences(inputs, r.inputs))))
    return Explanation(
        key=key,
        closest=best.key,
        built_at=best.finished_at.isoformat(timespec="seconds"),
        changes=differences(inputs, best.inputs),
    )
