"""The farm's signature of each catalog entry, kept in the entry (`signature`), and its check wherever bytes leave
the store.

An entry is signed only from attestations that verify (mlc_farm/trust/attestations.py): the files it serves are
the digests its builds signed where they ran, never what the store lists. The signed statement (model-signing's,
so a whole pull's `model.sig` verifies with `model_signing verify`) binds, beyond the files:
- its name: the model and quantization, each device's build key, the digest of the entry document itself (its
  checks, memory estimates, runtimes, JIT names: everything `install` and the exports act on);
- its time: a version that only grows (milliseconds since the epoch, above any version before it) and an expiry
  that each nightly renews (MLC_FARM_SIGNATURE_DAYS);
- its provenance: the digest of the SLSA statement made from the same attested records.

A client (`trusted_entry`) refuses an entry signed for another name, one that is not the document signed, an
expired one (unless told, with a warning) and one older than this machine has seen (mlc_farm/trust/seen.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from mlc_farm.digests import digest
from mlc_farm.records.folder import entry_files
from mlc_farm.records.reads import get_entry, load_record
from mlc_farm.records.schema import BuildRecord, CatalogEntry, FileEntry
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import folder_signature_path
from mlc_farm.trust import dsse, keys, provenance, seen, signatures
from mlc_farm.trust.dsse import SignatureRefused, SigningKey

log = logging.getLogger("mlc_farm.trust.signatures")

RecordOf = Callable[[str], BuildRecord | None]


def entry_digest(entry: CatalogEntry) -> str:
    """The digest of an entry document, its signature aside: what the signature binds."""
    return digest(entry.model_dump(mode="json", exclude={"signature"}))


def attested_records(entry: CatalogEntry, record_of: RecordOf) -> dict[str, BuildRecord]:
    """Every build the entry serves, each signed by its build (`record_of` gives only attested records), and each
    library the one its build signed: else SignatureRefused naming the first that is not."""
    out = {}
    for key in {entry.convert, entry.config, *(ref.key for ref in entry.libs.values())}:
        if (record := record_of(key)) is None:
            raise SignatureRefused(
                f"{entry.model} {entry.quantization}: build {key[:12]} carries no attestation that verifies"
            )
        out[key] = record
    for device, ref in entry.libs.items():
        if [ref.file] != out[ref.key].files:
            raise SignatureRefused(
                f"{entry.model} {entry.quantization}: {device}'s library is not what its build signed"
            )
    return out


def sign_entry(
    store: ArtifactStore,
    entry: CatalogEntry,
    key: SigningKey,
    record_of: RecordOf,
    after: int = 0,
    signed_at: datetime | None = None,
) -> CatalogEntry:
    """The entry signed under its name, from its attested records (`after`: a version it must be above; `signed_at`:
    now, unless a test's clock says otherwise): its provenance is signed and kept too, by its digest, before the
    entry that names it is written."""
    records = attested_records(entry, record_of)
    files = {p: f.sha256 for p, f in entry_files(store, entry, record_of=records.get).items()}
    statement = provenance.statement(entry, records, files)
    _keep(store, digest(statement), lambda: key.sign(statement))
    signed_at = signed_at or datetime.now(timezone.utc)
    unsigned = entry.model_copy(update={"signature": None})
    binding = {
        "model": entry.model,
        "quantization": entry.quantization,
        "builds": {
            "convert": entry.convert,
            "config": entry.config,
            "libraries": {d: r.key for d, r in sorted(entry.libs.items())},
        },
        "entry": entry_digest(unsigned),
        "provenance": digest(statement),
        "version": max(int(signed_at.timestamp() * 1000), after + 1),
        "signed_at": signed_at.isoformat(),
        "expires": (signed_at + timedelta(days=load_settings().signature_days)).isoformat(),
    }
    name = f"{entry.model}-{entry.quantization}"
    return unsigned.model_copy(update={"signature": signatures.sign(files, name, key, binding)})


def _keep(store: ArtifactStore, what: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A signed document kept in the store by the digest of what it signs: made once."""
    path = folder_signature_path(what)
    if (doc := store.read_json(path)) is None:
        doc = make()
        store.write_json(path, doc)
    return doc


@dataclass(frozen=True)
class Signed:
    """A verified signature of an entry: the files it signs, what it binds and the key that made it."""

    files: dict[str, str]
    binding: dict[str, Any]
    key: str
    bundle: dict[str, Any]

    @property
    def expires(self) -> datetime:
        return datetime.fromisoformat(self.binding["expires"])

    @property
    def signed_at(self) -> datetime:
        return datetime.fromisoformat(self.binding["signed_at"])


def signed(entry: CatalogEntry, model: str, quantization: str, trusted: list[bytes]) -> Signed:
    """The entry's signature verified with a trusted key, for this name, over this very document (its expiry and
    version are the caller's to judge)."""
    what = f"{model} {quantization}"
    if entry.signature is None:
        raise SignatureRefused(f"{what}: the entry is unsigned")
    found = dsse.verify(entry.signature, trusted, what)
    files = signatures.files_of(found.statement, what)
    binding = found.statement["predicate"].get(signatures.BINDING)
    try:
        named = (binding["model"], binding["quantization"])
        if named != (model, quantization):
            raise SignatureRefused(
                f"{what}: its signature is for {named[0]} {named[1]}: refused (an entry copied under another name)"
            )
        if binding["entry"] != entry_digest(entry):
            raise SignatureRefused(f"{what}: the entry is not the one the farm signed (the store was changed): refused")
        result = Signed(files, binding, found.key, entry.signature)
        if not isinstance(binding["version"], int) or result.expires.tzinfo is None or result.signed_at is None:
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise SignatureRefused(f"{what}: its signature binds no name and time the farm can read: refused") from None
    return result


@dataclass(frozen=True)
class Trusted:
    """An entry that may leave the store: its signature (None: unsigned, taken with --allow-unsigned)."""

    entry: CatalogEntry
    signature: Signed | None

    def check(self, files: dict[str, FileEntry], whole: bool) -> None:
        """Each of `files` is a file the signature signs (every one, `whole`)."""
        if self.signature is not None:
            what = f"{self.entry.model} {self.entry.quantization}"
            signatures.check({p: f.sha256 for p, f in files.items()}, self.signature.files, what, whole)


def trusted_entry(
    store: ArtifactStore, model: str, quantization: str, allow_unsigned: bool = False, allow_expired: bool = False
) -> Trusted:
    """The catalog entry of `model quantization`, once its signature holds for that name, is unexpired (or
    `allow_expired`, warned) and is no older than this machine has seen; an unsigned entry only with
    `allow_unsigned`, and only when none of its builds carries an attestation and this machine never saw it signed."""
    entry = get_entry(store, model, quantization)
    what = f"{store.url} {model} {quantization}"
    if entry.signature is None:
        _take_unsigned(store, entry, what, allow_unsigned)
        return Trusted(entry, None)
    found = signed(entry, model, quantization, keys.trusted_keys())
    if found.expires <= datetime.now(timezone.utc):
        said = f"{what}: its signature expired on {found.expires:%Y-%m-%d %H:%M} UTC (no nightly renewed it)"
        if not allow_expired:
            raise SignatureRefused(f"{said}: refused (--allow-expired takes it anyway)")
        log.warning("%s: taken anyway (--allow-expired)", said)
    seen.remember(found.key, f"{model}/{quantization}", found.binding["version"])
    return Trusted(entry, found)


def _take_unsigned(store: ArtifactStore, entry: CatalogEntry, what: str, allow_unsigned: bool) -> None:
    if not allow_unsigned:
        raise SignatureRefused(f"{what}: the entry is unsigned: refused (--allow-unsigned takes it anyway)")
    if seen.ever_signed(f"{entry.model}/{entry.quantization}"):
        raise SignatureRefused(f"{what}: unsigned, but this machine verified a signed version of it before: refused")
    for key in (entry.convert, entry.config, *(ref.key for ref in entry.libs.values())):
        record = load_record(store, key)
        if record is not None and record.attestation is not None:
            raise SignatureRefused(
                f"{what}: unsigned, but its build {key[:12]} carries an attestation: its signature was removed, "
                "refused whatever --allow-unsigned says"
            )
    log.warning("%s is unsigned and none of its builds carries an attestation: taken (--allow-unsigned)", what)


def trusted_files(
    store: ArtifactStore,
    model: str,
    quantization: str,
    device: str | None = None,
    built_with: str | None = None,
    allow_unsigned: bool = False,
    allow_expired: bool = False,
) -> tuple[Trusted, dict[str, FileEntry]]:
    """The entry (trusted) and the files of its pull (one device's, or every one), each one the farm signed."""
    found = trusted_entry(store, model, quantization, allow_unsigned, allow_expired)
    files = entry_files(store, found.entry, device, built_with)
    found.check(files, whole=device is None and built_with is None)
    return found, files


def signed_provenance(store: ArtifactStore, found: Trusted) -> tuple[dict[str, Any], dict[str, Any]]:
    """The entry's provenance (statement, signed bundle): the one its verified signature names by digest, signed
    by a trusted key. A statement of other builds, or of another entry, is not the one named: refused."""
    what = f"{found.entry.model} {found.entry.quantization}"
    if found.signature is None:
        raise SignatureRefused(f"{what}: unsigned: no provenance the farm signed")
    named = str(found.signature.binding.get("provenance"))
    bundle = store.read_json(folder_signature_path(named)) if len(named) == 64 and named.isalnum() else None
    if bundle is None:
        raise SignatureRefused(f"{what}: the store holds no signed provenance of these builds")
    statement = dsse.verify(bundle, keys.trusted_keys(), f"the provenance of {what}").statement
    if digest(statement) != named:
        raise SignatureRefused(f"{what}: the signed provenance is not the one its signature names: refused")
    return statement, bundle


def sign_folder(store: ArtifactStore, files: dict[str, str], name: str, key: SigningKey) -> dict[str, Any]:
    """The signature of a published folder's files (path -> sha256), made once and kept in the store by what it
    signs: publishing the same folder again commits the same `model.sig`, not a new one."""
    return _keep(store, digest(sorted(files.items())), lambda: signatures.sign(files, name, key))
