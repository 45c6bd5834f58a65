"""What this machine remembers of the entries it verified: the highest version of each entry's signature, per
trusted key (TUF's client keeps its newest trusted metadata the same way). An entry older than one seen here is a
rollback (an old entry and its old signature put back in the store) and is refused.

Kept in MLC_FARM_CACHE as `trust/seen.json`, written whole under a lock (two pulls at once both count).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from mlc_farm.settings import load_settings
from mlc_farm.store.documents import MAX_DOCUMENT, parse_bounded
from mlc_farm.trust.dsse import SignatureRefused
from mlc_farm.whole_files import replace_whole

FILE = "trust/seen.json"


def _path() -> Path:
    return load_settings().cache_dir / FILE


@contextlib.contextmanager
def _locked() -> Iterator[dict[str, dict[str, int]]]:
    """The memory, read and written back whole under an exclusive lock."""
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (path.parent / ".seen.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seen = _read(path)
        before = json.dumps(seen, sort_keys=True)
        yield seen
        if json.dumps(seen, sort_keys=True) != before:
            replace_whole(path, json.dumps(seen, sort_keys=True, indent=1), 0o600)


def _read(path: Path) -> dict[str, dict[str, int]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    doc = parse_bounded(str(path), raw, MAX_DOCUMENT, SignatureRefused)
    return {
        k: {n: v for n, v in names.items() if isinstance(v, int)} for k, names in doc.items() if isinstance(names, dict)
    }


def remember(key: str, name: str, version: int) -> None:
    """Note that `key` signed `name` (`model/quantization`) at `version`; SignatureRefused when this machine has
    seen a higher one (the store serves an older entry than it served before)."""
    with _locked() as seen:
        newest = seen.setdefault(key, {}).get(name, 0)
        if version < newest:
            raise SignatureRefused(
                f"{name.replace('/', ' ')}: the store serves version {version} of its signature, older than version "
                f"{newest} this machine verified before: refused (an older entry put back: a rollback)"
            )
        seen[key][name] = version


def ever_signed(name: str) -> bool:
    """Whether this machine verified a signed version of `name` under any key."""
    path = _path()
    return any(name in names for names in _read(path).values()) if path.exists() else False
