"""Reading the catalog: list what was built, and write an MLC-ready directory with every file verified."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import BaseModel

from mlc_farm.build import all_records, load_record
from mlc_farm.manifest import CatalogEntry, FileEntry, catalog_path, referenced_blobs
from mlc_farm.store import ArtifactStore, StoreError


class CatalogRow(BaseModel):
    entry: CatalogEntry
    weights_size: int
    lib_sizes: dict[str, int]
    built_at: str


def catalog(store: ArtifactStore) -> list[CatalogRow]:
    rows = []
    for name in store.list("catalog/"):
        if not name.endswith(".json"):
            continue
        entry = CatalogEntry.model_validate(store.read_json(name))
        weights = load_record(store, entry.weights)
        rows.append(
            CatalogRow(
                entry=entry,
                weights_size=weights.size if weights else 0,
                lib_sizes={d: ref.file.size for d, ref in entry.libs.items()},
                built_at=weights.finished_at.isoformat(timespec="seconds") if weights else "missing",
            )
        )
    return rows


def get_entry(store: ArtifactStore, model: str, quantization: str) -> CatalogEntry:
    data = store.read_json(catalog_path(model, quantization))
    if data is None:
        known = sorted(
            f"{r.entry.model} {r.entry.quantization}" for r in catalog(store)
        )  # small: one file per model x quantization
        raise StoreError(
            f"{store.url} has no build of {model} {quantization}"
            + (f"; it has: {', '.join(known)}" if known else "; the catalog is empty")
        )
    return CatalogEntry.model_validate(data)


def lib_filename(model: str, quantization: str, device: str, ext: str) -> str:
    """The MLC naming convention: `{model_id}-{quantization}-{device}.{ext}`."""
    return f"{model}-{quantization}-{device}.{ext}"


def pull_files(
    store: ArtifactStore, model: str, quantization: str, device: str | None = None, lib_dir: str = "lib"
) -> dict[str, FileEntry]:
    """The MLC-ready layout of a catalog entry: relative path -> file (weights at the root, libraries in
    `lib_dir`: `lib/` for a pull, `libs/` on the Hub as the mlc-ai repos have it)."""
    entry = get_entry(store, model, quantization)
    weights = load_record(store, entry.weights)
    if weights is None:
        raise StoreError(f"{catalog_path(model, quantization)} points at a missing build {entry.weights}")
    if device is not None and device not in entry.libs:
        raise StoreError(
            f"{model} {quantization} has no library for device {device!r}; "
            f"built: {', '.join(sorted(entry.libs)) or 'none'}"
        )
    wanted = {f.path: f for f in weights.files}
    for name, ref in entry.libs.items():
        if device in (None, name):
            ext = ref.file.path.rsplit(".", 1)[-1]
            wanted[f"{lib_dir}/{lib_filename(model, quantization, name, ext)}"] = ref.file
    return dict(sorted(wanted.items()))


def pull(
    store: ArtifactStore, model: str, quantization: str, out: Path, device: str | None = None, workers: int = 4
) -> list[Path]:
    """Write weights, config, tokenizer and the libraries (one device, or all) into `out`, each verified."""
    files = pull_files(store, model, quantization, device)

    def one(item: tuple[str, FileEntry]) -> Path:
        store.get_blob(item[1].sha256, out / item[0])
        return out / item[0]

    with ThreadPoolExecutor(max_workers=workers) as pool:  # many small tokenizer/config files: overlap them
        return list(pool.map(one, files.items()))


def verify(store: ArtifactStore) -> list[str]:
    """Every catalog entry points at records, and every record at blobs, that exist: the problems found."""
    problems = []
    for row in catalog(store):
        e = row.entry
        for key in [e.weights, *(ref.key for ref in e.libs.values())]:
            if load_record(store, key) is None:
                problems.append(f"{catalog_path(e.model, e.quantization)}: build {key} has no record")
    for name, record in all_records(store):
        problems += [
            f"{name}: {f.path} -> blob {f.sha256} is missing"
            for f in referenced_blobs(record)
            if not store.has_blob(f.sha256)
        ]
    return problems
