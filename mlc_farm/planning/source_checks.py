"""What the farm reads from a model source, checked before anything runs.

A source is written by others (a `git clone`, an unpacked archive, a Hub repo): a file in it may be a link to a
secret on the building machine, and its config.json may hold sizes no model has. So every file the farm reads
must resolve inside the source (a Hub snapshot's links into its repo's `blobs/` do), and the config.json values
the farm sizes anything by must be integers in sane bounds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlc_farm.errors import BadInput
from mlc_farm.terminal import printable

CONFIG_MAX_BYTES = 4 << 20  # real config.json files are kilobytes
# Bounds on the config.json fields that size anything (the twins, estimates): well past every real model.
CONFIG_LIMITS: dict[str, int] = {
    "hidden_size": 1 << 17,
    "intermediate_size": 1 << 20,
    "num_hidden_layers": 1024,
    "num_attention_heads": 1024,
    "num_key_value_heads": 1024,
    "head_dim": 2048,
    "vocab_size": 1 << 22,
    "max_position_embeddings": 1 << 24,
}


class SourceRefused(BadInput):
    """A model source the farm will not read: a link leaving it, or a config.json it cannot trust."""


def _refuse(model: str, what: str) -> SourceRefused:
    return SourceRefused(printable(f"model {model}: {what}"))


def inside(model: str, directory: Path, names: list[str], root: Path | None = None) -> dict[str, Path]:
    """Each of `names` in `directory` as the real file it is, refused unless it resolves inside `root` (the
    directory itself, or a Hub snapshot's repo folder): no link out of the source, no loop, no dangling link."""
    top = (root or directory).resolve()
    out = {}
    for name in names:
        path = directory / name
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError:
            raise _refuse(model, f"{name} is a dangling link (to {os.readlink(path)})") from None
        except (RuntimeError, OSError):  # a loop: RuntimeError up to Python 3.12, OSError (ELOOP) after
            raise _refuse(model, f"{name} is a link loop (through {os.readlink(path)})") from None
        if not real.is_relative_to(top):
            raise _refuse(
                model,
                f"{name} is a link to {real}, outside the source {top}: refused, as any file "
                "that leaves a model folder is (copy the file into the folder instead)",
            )
        if not real.is_file():
            raise _refuse(model, f"{name} is not a regular file")
        out[name] = real
    return out


def listed(directory: Path) -> list[str]:
    """The names in a source directory that are files or links (a dangling link or a loop included: refused
    later by `inside`, never skipped)."""
    return [p.name for p in directory.iterdir() if p.is_symlink() or p.is_file()]


def read_config(model: str, path: Path) -> dict[str, Any]:
    """config.json read and checked: an object, with every sizing field an integer within CONFIG_LIMITS and the
    attention heads a multiple of the key-value heads."""
    size = path.stat().st_size
    if size > CONFIG_MAX_BYTES:
        raise _refuse(model, f"config.json is {size} bytes (at most {CONFIG_MAX_BYTES})")
    try:
        config = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise _refuse(model, f"config.json is not JSON: {str(e)[:200]}") from None
    return check_config(model, config)


def check_config(model: str, config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise _refuse(model, f"config.json is a JSON {type(config).__name__}, not an object")
    for field, top in CONFIG_LIMITS.items():
        value = config.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise _refuse(model, f"config.json field {field}: {str(value)[:80]!r} is not an integer")
        if not 1 <= value <= top:
            raise _refuse(model, f"config.json field {field}: {value} is not between 1 and {top}")
    if not isinstance(config.get("model_type", ""), str):
        raise _refuse(model, f"config.json field model_type: {str(config['model_type'])[:80]!r} is not a string")
    heads, kv = config.get("num_attention_heads"), config.get("num_key_value_heads")
    if heads and kv and heads % kv:
        raise _refuse(model, f"config.json field num_key_value_heads: {kv} does not divide num_attention_heads {heads}")
    return config
