"""The farm's signatures in the store: of each catalog entry and its provenance, made before the entry moves (so
no reader sees an entry without them) and checked before `pull` or `install` writes anything, so a blob swapped in
the bucket, with its record rewritten to match, is refused; and of each published folder and its provenance."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from mlc_farm.planning.keys import digest
from mlc_farm.records.schema import CatalogEntry, FileEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import entry_signature_path, folder_signature_path
from mlc_farm.trust import keys, provenance, signatures

log = logging.getLogger("mlc_farm.trust.signatures")


def _path(entry: CatalogEntry) -> str:
    served = {"convert": entry.convert, "config": entry.config, "libs": {d: r.key for d, r in entry.libs.items()}}
    return entry_signature_path(entry.model, entry.quantization, digest(served))


def sign_entry(
    store: ArtifactStore, entry: CatalogEntry, files_of: Callable[[ArtifactStore, CatalogEntry], dict[str, FileEntry]]
) -> None:
    """Sign every file the entry serves (`files_of`: its whole pull, `pull.entry_files`) and its provenance, once per
    set of builds it serves: an entry already signed costs one read, nothing is loaded for it."""
    name = _path(entry)
    if store.read_json(name) is not None:
        return
    digests = {p: f.sha256 for p, f in files_of(store, entry).items()}
    sign_statement(store, provenance.statement(entry, provenance.entry_records(store, entry), digests))
    bundle = signatures.sign(digests, f"{entry.model}-{entry.quantization}", keys.signing_key())
    store.write_json(name, json.loads(bundle))


def sign_folder(store: ArtifactStore, files: dict[str, str], name: str) -> str:
    """The signature (bundle JSON) of a published folder's files (path -> sha256), made once and kept in the
    store by what it signs: publishing the same folder again commits the same `model.sig`, not a new one."""
    return _kept(store, signatures.files_digest(files), lambda: signatures.sign(files, name, keys.signing_key()))


def sign_statement(store: ArtifactStore, statement: dict[str, Any]) -> str:
    """A provenance statement signed (bundle JSON), made once per statement and kept like a folder's signature."""
    return _kept(store, digest(statement), lambda: signatures.sign_statement(statement, keys.signing_key()))


def signed_provenance(store: ArtifactStore, statement: dict[str, Any]) -> str | None:
    """The farm's signed bundle of exactly this statement, if it made one (None: it never signed it)."""
    doc = store.read_json(folder_signature_path(digest(statement)))
    return _text(doc) if doc is not None else None


def _kept(store: ArtifactStore, what: str, make: Callable[[], str]) -> str:
    path = folder_signature_path(what)
    if (doc := store.read_json(path)) is None:
        doc = json.loads(make())
        store.write_json(path, doc)
    return _text(doc)


def _text(doc: dict[str, Any]) -> str:
    """A bundle as text, the same bytes however the store keeps it (so a folder's model.sig never changes)."""
    return json.dumps(doc, sort_keys=True)


def signed_by(store: ArtifactStore, entry: CatalogEntry) -> str | None:
    """The fingerprint of the key that signed the entry (the bundle's key hint), None when it is unsigned: what a
    page shows is read from the store, not from whichever key the reader's machine has."""
    doc = store.read_json(_path(entry)) or {}
    hint = doc.get("verificationMaterial", {}).get("publicKey", {}).get("hint")
    return f"sha256:{hint}" if isinstance(hint, str) and hint.isalnum() else None


def verified(
    store: ArtifactStore, entry: CatalogEntry, files: dict[str, FileEntry], whole: bool, allow_unsigned: bool
) -> str | None:
    """The entry's signature (bundle JSON) once each of `files` is the one the farm signed (and, `whole`, every
    signed file is among them); None when the entry is unsigned and `allow_unsigned` takes it anyway."""
    what = f"{store.url} {entry.model} {entry.quantization}"
    doc = store.read_json(_path(entry))
    if doc is None:
        if not allow_unsigned:
            raise signatures.SignatureRefused(
                f"{what}: the store holds no signature of these builds: refused (--allow-unsigned takes it anyway)"
            )
        log.warning("%s is unsigned: taken without a signature (--allow-unsigned)", what)
        return None
    bundle = _text(doc)
    signed = signatures.signed_files(bundle, keys.trusted_keys(), what)
    signatures.check({p: f.sha256 for p, f in files.items()}, signed, what, whole)
    return bundle
