"""When the farm signs again an entry that otherwise stays as it is: its signature is by a key that is no longer
the signing key (a rotation), it was signed more than MLC_FARM_SIGNATURE_RENEW_HOURS ago (so a nightly renews its
expiry before any client sees it lapse), or its builds' signed bytes are no longer the ones it lists (a rebuild of
a key whose converter is not byte-reproducible)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from mlc_farm.records.folder import entry_files
from mlc_farm.records.schema import BuildRecord, CatalogEntry
from mlc_farm.store import ArtifactStore
from mlc_farm.trust.dsse import SignatureRefused, SigningKey
from mlc_farm.trust.entry_signatures import Signed, attested_records


def due(
    store: ArtifactStore,
    current: CatalogEntry,
    found: Signed,
    key: SigningKey,
    record_of: Callable[[str], BuildRecord | None],
    renew_after: timedelta,
    now: datetime | None = None,
) -> str | None:
    """Why the entry's signature (`found`, verified) must be made again, None when it holds as it is.
    `renew_after`: MLC_FARM_SIGNATURE_RENEW_HOURS, read once by the caller (reading the settings costs
    milliseconds, seconds over a catalog's entries)."""
    if found.key != key.fingerprint:
        return f"signed by {found.key[:19]}, not the signing key {key.fingerprint[:19]}"
    if (now or datetime.now(timezone.utc)) - found.signed_at >= renew_after:
        return f"signed on {found.signed_at:%Y-%m-%d %H:%M}: renewed"
    try:
        records = attested_records(current, record_of)
    except SignatureRefused as e:
        return str(e)
    if {p: f.sha256 for p, f in entry_files(store, current, record_of=records.get).items()} != found.files:
        return "its builds' signed bytes changed (a rebuild)"
    return None


def version_of(entry: CatalogEntry, verified: Callable[[CatalogEntry], Signed]) -> int:
    """The version of the entry's signature (0: none that verifies): a new one is above it."""
    try:
        version: int = verified(entry).binding["version"]
    except SignatureRefused:
        return 0
    return version
