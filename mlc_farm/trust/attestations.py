"""A build's attestation: the in-toto statement (SLSA provenance v1) a build signs where it ran, over the files
the toolchain wrote (hashed there, before any upload) and over its own record, so that nothing the store says
about a build is believed unless the build itself said it.

Subjects are the build's outputs with their sha256; the predicate names what was built (kind, key, the digest of
its inputs, which is its key), the toolchain, the source and the builds it read, and, as a byproduct, the digest
of the build record (every field but the attestation): a record rewritten in the store (a swapped blob, a check
said to have passed) no longer matches the statement its build signed.
"""

from __future__ import annotations

import logging
from typing import Any

from mlc_farm.digests import digest
from mlc_farm.records.reads import load_record
from mlc_farm.records.schema import BuildRecord, stored
from mlc_farm.store import ArtifactStore
from mlc_farm.trust import dsse
from mlc_farm.trust.dsse import SignatureRefused, SigningKey

log = logging.getLogger(__name__)

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/mlc-farm/mlc-farm/blob/main/README.md#attestations"
BUILDER = "https://github.com/mlc-farm/mlc-farm"
RECORD = "build record"  # the byproduct whose digest is the record's
_UPSTREAM = ("convert", "config", "library", "reference")  # inputs that name another build by its key


class Unattested(SignatureRefused):
    """A build record that carries no attestation (written before attestations, or stripped)."""


def record_digest(record: BuildRecord) -> str:
    """The digest of a record's every field but its attestation, in the form the store keeps it."""
    return digest({k: v for k, v in stored(record).items() if k != "attestation"})


def _dependencies(inputs: dict[str, Any]) -> list[dict[str, Any]]:
    """The source (its identity: a Hub commit, or a local directory's file hashes) and the builds it read."""
    deps = []
    if isinstance(source := inputs.get("source"), dict):
        deps.append({"name": "source", "digest": {"sha256": digest(source)}, "annotations": source})
    deps += [{"name": f"{k} build", "annotations": {"key": inputs[k]}} for k in _UPSTREAM if inputs.get(k)]
    return deps


def statement(record: BuildRecord) -> dict[str, Any]:
    """What a build signs about itself (pure: the same record gives the same statement)."""
    return {
        "_type": dsse.STATEMENT_TYPE,
        "subject": [{"name": f.path, "digest": {"sha256": f.sha256}} for f in record.files],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"kind": record.kind, "key": record.key, "inputs": digest(record.inputs)},
                "internalParameters": {"toolchain": record.toolchain},
                "resolvedDependencies": _dependencies(record.inputs),
            },
            "runDetails": {
                "builder": {"id": BUILDER},
                "metadata": {
                    "invocationId": record.flow_run or "",
                    "startedOn": record.started_at.isoformat(),
                    "finishedOn": record.finished_at.isoformat(),
                },
                "byproducts": [
                    {"name": RECORD, "digest": {"sha256": record_digest(record)}},
                    *([{"name": "build.log", "digest": {"sha256": record.log.sha256}}] if record.log else []),
                ],
            },
        },
    }


def attest(record: BuildRecord, key: SigningKey) -> BuildRecord:
    """The record with its build's signed statement: made in the process that ran the toolchain, from the
    digests it computed of what the toolchain wrote."""
    return record.model_copy(update={"attestation": key.sign(statement(record))})


def check(record: BuildRecord, trusted: list[bytes]) -> dsse.Verified:
    """The record's attestation verified with a trusted key and matching the record whole: Unattested when it
    has none, SignatureRefused (naming what differs) when it does not hold."""
    what = f"build {record.key[:12]}"
    if record.attestation is None:
        raise Unattested(f"{what} carries no attestation (a record from before attestations, or one stripped)")
    found = dsse.verify(record.attestation, trusted, f"{what}'s attestation")
    if found.statement != statement(record):
        raise SignatureRefused(f"{what}: its record is not the one its build signed (the store was changed)")
    if digest(record.inputs) != record.key:
        raise SignatureRefused(f"{what}: its inputs do not hash to its key")
    return found


def attested(store: ArtifactStore, key: str, trusted: list[bytes]) -> BuildRecord | None:
    """The record of `key` if its build signed it (verified), else None: missing, unattested or failing (said
    in the log): what the farm treats as not built, so it is built again, never reused or signed."""
    record = load_record(store, key)
    if record is None:
        return None
    try:
        check(record, trusted)
    except Unattested as e:
        log.warning("%s: built again", e)
        return None
    except SignatureRefused as e:
        log.warning("%s/%s: %s: refused, built again", store.url, key, e)
        return None
    return record
