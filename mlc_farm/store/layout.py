"""Every path the farm writes into a store, in one place (like an OCI registry).

- `blobs/sha256/<hex>`: immutable files, named by their content.
- `builds/<key>.json`: one record per finished build, listing its files by sha256.
- `catalog/<model>/<quant>.json`: the current convert, config and each device's library of a model x quantization.
- `toolchains/<pool>.json`: the toolchain a farm pool probed (farm mode).
- `leases/<key>.json`: who is building a key right now, until when, and the blobs it is about to reference;
  `leases/gc.json`: a gc is running (mlc_farm/store/lease.py).
- `failures/<key>.json`: the last failure of a key that has no build yet: the error and its log (kept by gc).
- `published/<model>/<quant>.json`: the Hub repo a catalog entry was last published to, and its builds.
- `fingerprints/<key>.json`: a toolchain's conversion fingerprint for a conversion class (mlc_farm/planning/twins.py).
- `signatures/folders/<digest>.json`: a signed document kept by the digest of what it signs: a published folder's
  `model.sig` (by its files) and an entry's provenance (by its statement, which the entry's signature names).
  Build records carry their build's attestation, and catalog entries their signature, inside them.

Written in the order blobs, record, catalog, so a reader never follows a pointer to nothing.
"""

from __future__ import annotations

BLOBS = "blobs/sha256/"
BUILDS = "builds/"
CATALOG = "catalog/"
FAILURES = "failures/"
LEASES = "leases/"
TOOLCHAINS = "toolchains/"
FINGERPRINTS = "fingerprints/"
CLOCK = "clock/"  # a document written and read back for the store's own time, then deleted (lease.store_now)
GC_LEASE = f"{LEASES}gc.json"


def blob_path(sha256: str) -> str:
    return f"{BLOBS}{sha256}"


def blob_url(store_url: str, sha256: str) -> str:
    """Where a person finds a blob (a log): printed in summaries and messages."""
    return f"{store_url}/{blob_path(sha256)}"


def record_path(key: str) -> str:
    return f"{BUILDS}{key}.json"


def published_path(model: str, quantization: str) -> str:
    return f"published/{model}/{quantization}.json"


def failure_path(key: str) -> str:
    return f"{FAILURES}{key}.json"


def catalog_path(model: str, quantization: str) -> str:
    return f"{CATALOG}{model}/{quantization}.json"


def lease_path(key: str) -> str:
    return f"{LEASES}{key}.json"


def toolchain_path(pool: str) -> str:
    return f"{TOOLCHAINS}{pool}.json"


def folder_signature_path(digest: str) -> str:
    return f"signatures/folders/{digest}.json"


def fingerprint_path(key: str) -> str:
    return f"{FINGERPRINTS}{key}.json"
