"""Pulling from the catalog: an MLC-ready directory, every file verified against its sha256."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlc_farm import stopping
from mlc_farm.checks import runtime
from mlc_farm.distribute.output_dir import replacing
from mlc_farm.errors import StoreError
from mlc_farm.records.reads import get_entry, load_record
from mlc_farm.records.schema import CatalogEntry, FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import catalog_path
from mlc_farm.trust.entry_signatures import verified
from mlc_farm.trust.signatures import SIGNATURE


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


def pull_files(
    store: ArtifactStore, model: str, quantization: str, device: str | None = None, built_with: str | None = None
) -> dict[str, FileEntry]:
    return entry_files(store, get_entry(store, model, quantization), device, built_with)


def entry_files(
    store: ArtifactStore, entry: CatalogEntry, device: str | None = None, built_with: str | None = None
) -> dict[str, FileEntry]:
    """The MLC-ready layout of a catalog entry: relative path -> file (weights, config and tokenizer at the root,
    libraries in `libs/`, as the mlc-ai repos on the Hub have it); `built_with`: only the libraries of that
    runtime (`--runtime`)."""
    model, quantization = entry.model, entry.quantization
    if built_with is not None:
        keep = runtime.built_with({d: r.runtime for d, r in entry.libs.items()}, built_with, f"{model} {quantization}")
        entry = entry.model_copy(update={"libs": {d: entry.libs[d] for d in keep}})
    wanted: dict[str, FileEntry] = {}
    for key in (entry.convert, entry.config):
        record = load_record(store, key)
        if record is None:
            raise StoreError(f"{catalog_path(model, quantization)} points at a missing build {key}")
        wanted |= {f.path: f for f in record.files}
    if device is not None and device not in entry.libs:
        raise StoreError(
            f"{model} {quantization} has no library for device {device!r}; "
            f"built: {', '.join(sorted(entry.libs)) or 'none'}"
        )
    for name, ref in entry.libs.items():
        if device in (None, name):
            wanted[lib_path(entry, name)] = ref.file
    return dict(sorted(wanted.items()))


def pull(
    store: ArtifactStore,
    model: str,
    quantization: str,
    out: Path,
    device: str | None = None,
    built_with: str | None = None,
    workers: int = 4,
    replace: bool = False,
    progress: Callable[[int, int], None] | None = None,
    allow_unsigned: bool = False,
) -> list[Path]:
    """Write weights, config, tokenizer and the libraries (one device, or all) into `out`, each verified: first
    against the farm's signature of the entry (a whole pull gets it as `model.sig`), then by sha256.

    Everything lands in a temporary directory beside `out` first, which becomes `out` only once every file
    checked out: a failed or interrupted pull leaves no half-written directory. A non-empty `out` is replaced
    only with `replace`. `progress(bytes done, bytes in all)` follows the download."""
    entry = get_entry(store, model, quantization)
    files = entry_files(store, entry, device, built_with)
    whole = device is None and built_with is None
    bundle = verified(store, entry, files, whole, allow_unsigned)
    total, lock, done = sum(f.size for f in files.values()), threading.Lock(), [0]

    def landed(n: int) -> None:
        with lock:
            done[0] += n
            if progress:
                progress(done[0], total)

    with replacing(out, "-o", replace) as staging:

        def one(item: tuple[str, FileEntry]) -> Path:
            store.get_blob(item[1].sha256, staging / item[0], landed, item[1].size)
            return out / item[0]

        pool = ThreadPoolExecutor(max_workers=workers)  # many small tokenizer/config files: overlap them
        try:
            written = list(pool.map(one, files.items()))
        finally:
            # A failed pull lets the downloads in flight end (each within the retry budget) before its staging
            # goes, so none writes into it afterwards; a stopped one does not wait (the process ends now).
            pool.shutdown(wait=not stopping.requested(), cancel_futures=True)
        if bundle and whole:
            (staging / SIGNATURE).write_text(bundle)
            written.append(out / SIGNATURE)
    return written
