"""Each conversion class's fingerprint under this toolchain: looked up in the store, else computed by
converting the class's twin (seconds on a CPU) and kept, failures included (the same toolchain fails the
same way; a class whose twin failed is keyed by the toolchain version, and says why)."""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mlc_farm.digests import digest
from mlc_farm.errors import ToolchainError
from mlc_farm.planning import twins
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import fingerprint_path
from mlc_farm.toolchain.commands import convert_weight_args
from mlc_farm.toolchain.info import ToolchainInfo, identity
from mlc_farm.toolchain.invoke import run


class Fingerprint(BaseModel):
    class_key: str
    toolchain: dict[str, str]
    fingerprint: str | None = None
    error: str | None = None  # why there is none: the twin's conversion failed


def _convert_twin(cls: dict[str, Any]) -> tuple[str | None, str | None]:
    base = load_settings().work_dir
    if base:
        base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlc-farm-twin-", dir=base) as tmp:
        work = Path(tmp)
        twin = twins.write_twin(cls, work / "twin")
        args = convert_weight_args(twin, cls["quantization"], work / "out", "cpu", None)
        label = f"twin {cls['architecture'].get('model_type')}/{cls['quantization']}"
        try:
            run("convert_weight", args, cell=label, log_path=work / "twin.log", timeout=600)
        except ToolchainError as e:
            return None, f"the twin's convert_weight failed ({str(e).splitlines()[0]})"
        return twins.fingerprint(work / "out"), None


def fingerprints(store: ArtifactStore, tc: ToolchainInfo, classes: dict[str, dict[str, Any]]) -> dict[str, Fingerprint]:
    """class key -> this toolchain's fingerprint (or why there is none), computed once per toolchain."""
    ident = identity(tc)

    def one(key: str) -> Fingerprint:
        name = fingerprint_path(digest({"toolchain": ident, "class": key}))
        if (found := store.read_json(name)) is not None:
            return Fingerprint.model_validate(found)
        value, error = _convert_twin(classes[key])
        fp = Fingerprint(class_key=key, toolchain=ident, fingerprint=value, error=error)
        store.write_json(name, fp.model_dump())
        return fp

    with ThreadPoolExecutor(max_workers=max(1, load_settings().parallel)) as pool:
        return dict(zip(classes, pool.map(one, classes), strict=True))
