"""Ready-to-use configs of the catalog for each MLC runtime (`mlc-farm export webllm|app|mlc-serve`).

- webllm: WebLLM `ModelRecord`s for the webgpu libraries: `model`, `model_id`, `model_lib`,
  `vram_required_MB`, `low_resource_required`, `required_features`, `overrides`, and `integrity` (SRI hashes
  of mlc-chat-config.json, the library and the tokenizer files, which WebLLM checks as it downloads them).
- app: `mlc-app-config.json`-style entries for the iphone/android libraries: `model_id`, `model_lib` (the
  library's system-lib prefix), `model_url`, `estimated_vram_bytes`.
- mlc-serve: for `mlc_llm serve` and MLCEngine: the model directory URL and the `model_lib` URL per device.

URLs point to the Hub repo when the entry was published with exactly these builds, pinned to the commit that
published them (`resolve/<commit>/`); else to `--base-url`, where the layout of `mlc-farm pull` is served as
`{base}/{model}-{quant}-MLC/resolve/main/...` (the shape WebLLM reads from any host). Library file names
carry their content hash, so no URL of a library ever serves other bytes (WebLLM caches by URL).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mlc_farm.catalog.published import published
from mlc_farm.checks.memory import MB, kv_bytes_per_element
from mlc_farm.checks.runtime import matches
from mlc_farm.devices import FAMILIES, of_target
from mlc_farm.errors import BadInput, NothingToExport, redact_urls
from mlc_farm.names import shorten
from mlc_farm.records.folder import entry_files, lib_path
from mlc_farm.records.reads import load_record
from mlc_farm.records.schema import CatalogEntry, FileEntry, LibraryRecord, of_kind
from mlc_farm.store import ArtifactStore
from mlc_farm.trust.entry_signatures import Trusted, signed
from mlc_farm.trust.keys import trusted_keys

Record = dict[str, Any]
LOW_RESOURCE_MB = 2048  # WebLLM's "low resource" models fit in about 2 GB
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "merges.txt")


def sri(sha256_hex: str) -> str:
    """Subresource Integrity of a file from its sha256: `sha256-<base64 of the digest>`."""
    return "sha256-" + base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def repo_name(entry: CatalogEntry) -> str:
    return f"{entry.model}-{entry.quantization}-MLC"


class Located:
    """Where an entry's files are: the Hub repo it was published to, or the served pull layout."""

    def __init__(self, root: str, model: str):
        self.root, self.model = root, model  # files under root; `model` is the URL a runtime is given

    def url(self, path: str) -> str:
        return f"{self.root}{path}"


def _exports(target: str) -> tuple[str, ...]:
    """The runtimes whose exports list a library of this target (its family's)."""
    found = of_target(target)
    return found.exports if found else ()


def check_base_url(url: str) -> str:
    """An address that every runtime (and a browser) fetches from: http(s), a host, no spaces or control
    characters, no credentials. `javascript:`, `file:` and the like are refused."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or not url.isprintable()
        or any(c.isspace() for c in url)
    ):
        raise BadInput(
            f"--base-url {shorten(redact_urls(url))}: give an http(s):// address with a host and no spaces or "
            "credentials, e.g. https://models.example.com"
        )
    return url


def locate(store: ArtifactStore, entry: CatalogEntry, base_url: str | None) -> Located | None:
    if found := published(store, entry):
        return Located(found.root(), found.root())
    if base_url:
        root = f"{base_url.rstrip('/')}/{repo_name(entry)}/resolve/main/"
        return Located(root, root)
    return None


def _files(store: ArtifactStore, entry: CatalogEntry) -> dict[str, FileEntry]:
    """The entry's files, each the one its signature signs: their digests are the SRI hashes a browser checks."""
    files = entry_files(store, entry)
    Trusted(entry, signed(entry, entry.model, entry.quantization, trusted_keys())).check(files, whole=True)
    return files


def _webllm(store: ArtifactStore, entry: CatalogEntry, where: Located, device: str) -> dict[str, Any]:
    ref, files = entry.libs[device], _files(store, entry)
    record: dict[str, Any] = {
        "model": where.model,
        "model_id": repo_name(entry),
        "model_lib": where.url(lib_path(entry, device)),
        "required_features": ["shader-f16"] if kv_bytes_per_element(entry.quantization) == 2 else [],
        "overrides": {},
        "integrity": {
            "model_lib": sri(ref.file.sha256),
            "tokenizer": {name: sri(files[name].sha256) for name in TOKENIZER_FILES if name in files},
        },
    }
    if "mlc-chat-config.json" in files:
        record["integrity"]["config"] = sri(files["mlc-chat-config.json"].sha256)
    if ref.memory:
        record["vram_required_MB"] = round(ref.memory.total_bytes / MB, 2)
        record["low_resource_required"] = ref.memory.total_bytes / MB <= LOW_RESOURCE_MB
        record["overrides"]["context_window_size"] = ref.memory.context_window
    return record


def _cuda_archs(entry: CatalogEntry, devices: set[str]) -> dict[str, list[str]]:
    """The CUDA architectures each library holds binaries for: what a server's GPU must be one of."""
    return {
        d: r.runtime.needs.cuda_archs
        for d in sorted(devices)
        if (r := entry.libs[d]).runtime and r.runtime.needs.cuda_archs
    }


def _system_lib_prefix(lib: LibraryRecord | None, entry: CatalogEntry) -> str:
    """`{model_type}_{quantization}`: what `mlc_llm package` links a phone library under."""
    model_type = ((lib.library_metadata or {}).get("model_type") if lib else None) or (
        (lib.inputs.get("model") or {}).get("model_type") if lib else None
    )
    return f"{model_type or entry.model}_{entry.quantization}".replace("-", "_")


def _webllm_records(store: ArtifactStore, entry: CatalogEntry, where: Located, devices: list[str]) -> list[Record]:
    return [_webllm(store, entry, where, d) for d in devices]


def _app_records(store: ArtifactStore, entry: CatalogEntry, where: Located, devices: list[str]) -> list[Record]:
    return [
        {
            "model_id": repo_name(entry),
            "model_lib": _system_lib_prefix(of_kind(load_record(store, entry.libs[d].key), LibraryRecord), entry),
            "model_url": where.model,
            "estimated_vram_bytes": (memory.total_bytes if (memory := entry.libs[d].memory) else None),
            "device": d,
        }
        for d in devices
    ]


def _serve_records(store: ArtifactStore, entry: CatalogEntry, where: Located, devices: list[str]) -> list[Record]:
    archs = _cuda_archs(entry, set(devices))
    return [
        {
            "model_id": repo_name(entry),
            "model": where.model,
            "model_lib": {d: where.url(lib_path(entry, d)) for d in devices},
            **({"cuda_archs": archs} if archs else {}),
        }
    ]


@dataclass(frozen=True)
class Format:
    """A runtime's config: the key its list is under, and the records of one catalog entry's libraries
    (`devices`, in order: those whose family lists this runtime in its `exports`, or every one when
    `every_family`)."""

    key: str
    records: Callable[[ArtifactStore, CatalogEntry, Located, list[str]], list[Record]]
    every_family: bool = False


# A runtime per name: a new export format is a function above and a line here (the CLI's choices follow).
FORMATS: dict[str, Format] = {
    "webllm": Format("model_list", _webllm_records),
    "app": Format("model_list", _app_records),
    "mlc-serve": Format("models", _serve_records, every_family=True),
}


def export(
    store: ArtifactStore,
    entries: list[CatalogEntry],
    runtime: str,
    base_url: str | None,
    built_with: str | None = None,
) -> dict[str, Any]:
    """The config document of `runtime` for `entries` (only the libraries of the mlc_llm `built_with` names, when
    given); bad input when an entry has nowhere to be found."""
    fmt = FORMATS[runtime]
    unplaced = []
    out: list[Record] = []
    for entry in entries:
        where = locate(store, entry, base_url)
        if where is None:
            unplaced.append(f"{entry.model} {entry.quantization}")
            continue
        devices = [
            d
            for d, ref in sorted(entry.libs.items())
            if (built_with is None or matches(ref.runtime, built_with))
            and (fmt.every_family or runtime in _exports(ref.target))
        ]
        out += fmt.records(store, entry, where, devices)
    if unplaced:
        raise BadInput(
            f"not published to the Hub with its current builds: {', '.join(unplaced)}; publish them "
            "(`mlc-farm publish`) or give --base-url where `mlc-farm pull` directories are served"
        )
    if not out:
        families = " or ".join(f.name for f in FAMILIES.values() if fmt.every_family or runtime in f.exports)
        raise NothingToExport(
            f"nothing to export for {runtime}: {len(entries)} catalog entries, none with a library for {families}; "
            "add a device of that family to the matrix and build it"
        )
    return {fmt.key: out}
