"""Pulling from the catalog: an MLC-ready directory, every file verified against its sha256."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mlc_farm import stopping
from mlc_farm.output_dir import replacing
from mlc_farm.records.schema import FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.trust.entry_signatures import trusted_files
from mlc_farm.trust.signatures import SIGNATURE


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
    allow_expired: bool = False,
) -> list[Path]:
    """Write weights, config, tokenizer and the libraries (one device, or all) into `out`, each verified: first
    against the farm's signature of the entry (bound to its name, unexpired, no older than this machine has seen;
    written as `model.sig`), then by sha256 as it lands.

    Everything lands in a temporary directory beside `out` first, which becomes `out` only once every file
    checked out: a failed or interrupted pull leaves no half-written directory. A non-empty `out` is replaced
    only with `replace`. `progress(bytes done, bytes in all)` follows the download."""
    found, files = trusted_files(store, model, quantization, device, built_with, allow_unsigned, allow_expired)
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
        if found.signature:  # a one-device pull's verifies too: `verify-signature` knows a partial folder
            (staging / SIGNATURE).write_text(json.dumps(found.signature.bundle, sort_keys=True))
            written.append(out / SIGNATURE)
    return written
