"""One build, start to finish, without Prefect: run the toolchain steps, store blobs, then the record.

The Prefect tasks in `tasks/` wrap these; they can also run on a worker that has only the store.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlc_farm import toolchain
from mlc_farm.manifest import (
    BuildRecord,
    CatalogEntry,
    FileEntry,
    LibRef,
    catalog_path,
    now,
    record_path,
)
from mlc_farm.plan import LibBuild, Plan, WeightBuild
from mlc_farm.sources import ResolvedSource, file_sha256
from mlc_farm.store import ArtifactStore, StoreError

# Generous defaults: real models take minutes to an hour per step on a GPU worker.
DEFAULT_TIMEOUT = float(os.environ.get("MLC_FARM_STEP_TIMEOUT", 4 * 3600))
LIB_FILE = "model-lib"


class BuildFailed(RuntimeError):
    """A build that failed for a reason a retry will not fix; names where its log is kept."""

    def __init__(self, message: str, log: str | None):
        self.log = log
        super().__init__(message + (f"\n  full log: {log}" if log else ""))


def load_record(store: ArtifactStore, key: str) -> BuildRecord | None:
    data = store.read_json(record_path(key))
    return BuildRecord.model_validate(data) if data else None


def all_records(store: ArtifactStore) -> Iterator[tuple[str, BuildRecord]]:
    """(store name, record) of every build record in the store."""
    for name in store.list("builds/"):
        record = load_record(store, name.removeprefix("builds/").removesuffix(".json"))
        if record:
            yield name, record


def store_files(store: ArtifactStore, paths: dict[str, Path], workers: int = 4) -> list[FileEntry]:
    """Put every file as a blob (skipping those already there) and list them for the record."""

    def one(item: tuple[str, Path]) -> FileEntry:
        name, path = item
        sha = file_sha256(path)
        store.put_blob(path, sha)
        return FileEntry(path=name, size=path.stat().st_size, sha256=sha)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sorted(pool.map(one, paths.items()), key=lambda f: f.path)


def _workdir(key: str) -> Path:
    base = os.environ.get("MLC_FARM_WORK_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{key[:12]}-", dir=base))


def _run_steps(
    store: ArtifactStore,
    key: str,
    kind: str,
    inputs: dict,
    steps: Callable[[Path, Path], dict[str, float]],
    outputs: Callable[[Path], dict[str, Path]],
    on_line: Callable[[str], None] | None,
    flow_run: str | None,
) -> BuildRecord:
    work = _workdir(key)
    log_path = work / "build.log"
    started = now()
    try:
        try:
            seconds = steps(work, log_path)
        except toolchain.ToolchainError as e:
            log = store_files(store, {"build.log": log_path})[0] if log_path.exists() else None
            raise BuildFailed(str(e), f"{store.url}/blobs/sha256/{log.sha256}" if log else None) from None
        files = store_files(store, outputs(work))
        log_entry = store_files(store, {"build.log": log_path})[0]
        record = BuildRecord(
            key=key,
            kind=kind,  # type: ignore[arg-type]
            files=files,
            inputs=inputs,
            toolchain=inputs["toolchain"],
            started_at=started,
            finished_at=now(),
            seconds=seconds,
            log=log_entry,
            flow_run=flow_run,
            host=socket.gethostname(),
        )
        # Last: only now does the build exist for readers, with every blob already in place.
        store.write_json(record_path(key), record.model_dump(mode="json"))
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_weights(
    store: ArtifactStore,
    wb: WeightBuild,
    source_dir: Path,
    convert_device: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_line: Callable[[str], None] | None = None,
    flow_run: str | None = None,
) -> BuildRecord:
    """convert_weight + gen_config into one directory: shards, tensor-cache.json, config, tokenizer."""
    cell = f"{wb.model}/{wb.quantization}"

    def steps(work: Path, log: Path) -> dict[str, float]:
        out = work / "out"
        run = {"cell": cell, "log_path": log, "timeout": timeout, "on_line": on_line}
        convert = toolchain.convert_weight_args(source_dir, wb.quantization, out, convert_device, wb.model_type)
        gen = toolchain.gen_config_args(source_dir, wb.quantization, wb.conv_template, wb.overrides, out, wb.model_type)
        return {
            "convert_weight": toolchain.run("convert_weight", convert, **run),
            "gen_config": toolchain.run("gen_config", gen, **run),
        }

    def outputs(work: Path) -> dict[str, Path]:
        return {p.relative_to(work / "out").as_posix(): p for p in (work / "out").rglob("*") if p.is_file()}

    return _run_steps(store, wb.key, "weights", wb.inputs, steps, outputs, on_line, flow_run)


def build_library(
    store: ArtifactStore,
    lb: LibBuild,
    config_from: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_line: Callable[[str], None] | None = None,
    flow_run: str | None = None,
) -> BuildRecord:
    """compile the mlc-chat-config.json of the weight build `config_from` for one target."""
    weights = load_record(store, config_from)
    if weights is None:
        raise StoreError(f"weights {config_from[:12]} have no build record in {store.url}")
    config = next(f for f in weights.files if f.path == "mlc-chat-config.json")
    lib_name = f"{LIB_FILE}.{lb.device.library_ext}"
    users = ", ".join(f"{c.model}/{c.quantization}/{c.device}" for c in lb.users)

    def steps(work: Path, log: Path) -> dict[str, float]:
        config_path = work / "config" / "mlc-chat-config.json"
        store.get_blob(config.sha256, config_path)
        args = toolchain.compile_args(config_path, lb.device, lb.overrides, work / lib_name)
        env = toolchain.compile_env(lb.device)
        seconds = toolchain.run("compile", args, cell=users, log_path=log, timeout=timeout, env=env, on_line=on_line)
        return {"compile": seconds}

    return _run_steps(
        store, lb.key, "library", lb.inputs, steps, lambda work: {lib_name: work / lib_name}, on_line, flow_run
    )


def update_catalog(
    store: ArtifactStore, plan: Plan, source: ResolvedSource, model: str, quantization: str
) -> CatalogEntry | None:
    """Point the catalog at this plan's weights and every library of it that has a record.

    Nothing is written unless the weights exist; libraries of other toolchains are dropped, since a
    library must match the weights' format.
    """
    cells = [pc for pc in plan.units()[(model, quantization)] if pc.weights]
    if not cells or load_record(store, cells[0].weights) is None:  # type: ignore[arg-type]
        return None
    libs = {}
    for pc in cells:
        record = load_record(store, pc.library) if pc.library else None
        if record is not None:
            lb = plan.lib_builds[record.key]
            libs[pc.cell.device] = LibRef(key=record.key, file=record.files[0], target=lb.device.target)
    entry = CatalogEntry(
        model=model,
        quantization=quantization,
        source=source.model_dump(include={"kind", "ref", "revision", "identity", "license"}),
        weights=cells[0].weights,  # type: ignore[arg-type]
        libs=libs,
        updated_at=now(),
    )
    planned = {pc.cell.device for pc in cells}

    path = catalog_path(model, quantization)
    current = store.read_json(path)
    if current and current["weights"] == entry.weights and _lib_keys(current) >= _lib_keys(entry.model_dump()):
        return CatalogEntry.model_validate(current)  # nothing new: a no-op nightly writes nothing

    def merge(old: dict | None) -> dict:
        # Another run may have built other devices of the same weights: keep those libraries.
        if old and old.get("weights") == entry.weights:
            kept = {d: LibRef.model_validate(v) for d, v in old["libs"].items() if d not in planned}
            return entry.model_copy(update={"libs": {**kept, **entry.libs}}).model_dump(mode="json")
        return entry.model_dump(mode="json")

    return CatalogEntry.model_validate(store.update_json(path, merge))


def _lib_keys(entry: dict) -> set[tuple[str, str]]:
    return {(device, ref["key"]) for device, ref in entry["libs"].items()}
