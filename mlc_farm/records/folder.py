"""The layout of an MLC-ready folder of a catalog entry, one everywhere (a pull, the Hub repos, the exports' URLs,
the farm's signature of an entry): weights, config and tokenizer at the root, libraries in `libs/`, as the mlc-ai
repos on the Hub have it."""

from __future__ import annotations

from collections.abc import Callable

from mlc_farm.checks import runtime
from mlc_farm.errors import NotFound, StoreError
from mlc_farm.records.reads import load_record
from mlc_farm.records.schema import BuildRecord, CatalogEntry, FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import catalog_path


def lib_filename(model: str, quantization: str, device: str, sha256: str, ext: str) -> str:
    """The MLC naming convention, `{model_id}-{quantization}-{device}`, then the first 12 hex digits of the
    library's sha256: a URL of a library never serves other bytes (WebLLM caches by URL), a rebuild has a new one."""
    return f"{model}-{quantization}-{device}-{sha256[:12]}.{ext}"


LIB_DIR = "libs"  # one layout everywhere: a pull, the Hub repos, the exports' URLs


def lib_path(entry: CatalogEntry, device: str) -> str:
    """Where a device's library of a catalog entry is in a model directory: `libs/{model}-{quant}-{device}-{hash}.{ext}`."""
    ref = entry.libs[device]
    ext = ref.file.path.rsplit(".", 1)[-1]
    return f"{LIB_DIR}/{lib_filename(entry.model, entry.quantization, device, ref.file.sha256, ext)}"


def entry_files(
    store: ArtifactStore,
    entry: CatalogEntry,
    device: str | None = None,
    built_with: str | None = None,
    record_of: Callable[[str], BuildRecord | None] | None = None,
) -> dict[str, FileEntry]:
    """The MLC-ready layout of a catalog entry: relative path -> file; `built_with`: only the libraries of that
    runtime (`--runtime`); `record_of`: how a build's record is read (default: from the store as it is)."""
    record_of = record_of or (lambda key: load_record(store, key))
    model, quantization = entry.model, entry.quantization
    if built_with is not None:
        keep = runtime.built_with({d: r.runtime for d, r in entry.libs.items()}, built_with, f"{model} {quantization}")
        entry = entry.model_copy(update={"libs": {d: entry.libs[d] for d in keep}})
    wanted: dict[str, FileEntry] = {}
    for key in (entry.convert, entry.config):
        record = record_of(key)
        if record is None:
            raise StoreError(f"{catalog_path(model, quantization)} points at a missing build {key}")
        wanted |= {f.path: f for f in record.files}
    if device is not None and device not in entry.libs:
        raise NotFound(
            f"{model} {quantization} has no library for device {device!r}; "
            f"built: {', '.join(sorted(entry.libs)) or 'none'}"
        )
    for name, ref in entry.libs.items():
        if device in (None, name):
            wanted[lib_path(entry, name)] = ref.file
    return dict(sorted(wanted.items()))
