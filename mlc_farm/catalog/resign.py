"""`mlc-farm resign`: every catalog entry signed again with the current key, from attestations that verify (after
a key rotation: the nightly does it for its own matrix's entries). With `adopt`, a store written before
attestations is taken as it is now: the operator says they trust its bytes, each blob is hashed again against its
record, and each record that holds is attested with the farm's key; entries none of whose signatures verify are
then signed too.
"""

from __future__ import annotations

from collections.abc import Iterator

from mlc_farm.catalog.renewal import version_of
from mlc_farm.records.reads import all_records, entries
from mlc_farm.records.schema import CatalogEntry, referenced_blobs, stored
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import catalog_path, record_path
from mlc_farm.trust import attestations
from mlc_farm.trust.dsse import SignatureRefused, SigningKey
from mlc_farm.trust.entry_signatures import sign_entry, signed


def adopt(store: ArtifactStore, key: SigningKey, trusted: list[bytes]) -> Iterator[str]:
    """Attest every record that carries no attestation and whose blobs hash as it says; a line for each one
    attested or left (and why). A record whose attestation fails is left: it is not from before attestations."""
    for name, record in all_records(store):
        if record.attestation is not None:
            continue
        bad = [f"{f.path}: {p}" for f in referenced_blobs(record) if (p := store.check_blob(f.sha256))]
        if bad:
            yield f"left {name}: {bad[0]}"
            continue
        store.write_json(record_path(record.key), stored(attestations.attest(record, key)))
        yield f"attested {name} ({len(record.files)} files hashed again)"


def resign(store: ArtifactStore, key: SigningKey, trusted: list[bytes], adopted: bool) -> Iterator[str]:
    """Sign every entry again from its attested records; an entry whose signature does not verify with a trusted
    key is left (the next nightly rebuilds it from its builds) unless `adopted` (and then only an unsigned one)."""
    for entry in entries(store):
        what = f"{entry.model} {entry.quantization}"
        if (why := _untaken(entry, trusted, adopted)) is not None:
            yield f"left {what}: {why}"
            continue
        try:
            fresh = sign_entry(store, entry, key, lambda k: attestations.attested(store, k, trusted),
                               version_of(entry, lambda e: signed(e, e.model, e.quantization, trusted)))  # fmt: skip
        except SignatureRefused as e:
            yield f"left {what}: {e}"
            continue
        store.write_json(catalog_path(entry.model, entry.quantization), fresh.model_dump(mode="json"))
        yield f"signed {what} with {key.fingerprint[:19]}..."


def _untaken(entry: CatalogEntry, trusted: list[bytes], adopted: bool) -> str | None:
    """Why an entry is not signed again (None: it is)."""
    if entry.signature is None:
        return None if adopted else "unsigned (from before signatures: --adopt takes the store as it is)"
    try:
        signed(entry, entry.model, entry.quantization, trusted)
    except SignatureRefused as e:
        return f"{e} (the next nightly replaces it from its builds)"
    return None
