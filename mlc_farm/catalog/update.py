"""Moving the catalog forward after a run: one entry per model x quantization, only to proven builds.

Each library is checked against this model's weights: a library validated with another model of the same
architecture must still fit this model's tensor-cache.json and mlc-chat-config.json (a pure check of the
metadata its record keeps); the cell's check gives its run with these weights and its fidelity, judged
against the matrix's thresholds and against the same cell under the previous toolchain (the entry being
served). A library that fails either is left out, so it is never current. `next_entry` then decides
whether the entry moves.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from mlc_farm.catalog import renewal
from mlc_farm.checks import fidelity, memory, runtime
from mlc_farm.checks.fidelity import Fidelity
from mlc_farm.checks.fit import fit_check
from mlc_farm.checks.results import RunCheck, Validation
from mlc_farm.digests import digest
from mlc_farm.errors import DamagedDocumentError
from mlc_farm.parallel import each
from mlc_farm.planning.plan import Plan, PlanCell
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.outcomes import UnitResult
from mlc_farm.records.reads import read_blob_json
from mlc_farm.records.schema import (
    SCHEMA_VERSION,
    BuildRecord,
    CatalogEntry,
    CheckRecord,
    ConfigRecord,
    ConvertRecord,
    LibraryRecord,
    LibRef,
    R,
    now,
    of_kind,
)
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore
from mlc_farm.store.documents import first_problem
from mlc_farm.store.layout import catalog_path
from mlc_farm.trust import attestations, keys
from mlc_farm.trust.dsse import SignatureRefused
from mlc_farm.trust.entry_signatures import Signed, sign_entry, signed

log = logging.getLogger(__name__)


class Records:
    """Build records whose attestation verifies, and small JSON outputs, read once per run (on S3 each is a GET);
    the farm's keys and settings, read once. A record its build did not sign is not there (it is built again, never
    served)."""

    def __init__(self, store: ArtifactStore, known: dict[str, BuildRecord] | None = None):
        self.store = store
        self.trusted = keys.trusted_keys()
        self.signing_key = keys.signing_key()
        self.renew_after = timedelta(hours=load_settings().signature_renew_hours)
        self._records: dict[str, BuildRecord | None] = dict(known or {})
        self._docs: dict[str, dict[str, Any]] = {}
        self._signed: dict[str, Signed | SignatureRefused] = {}

    def record(self, key: str) -> BuildRecord | None:
        if key not in self._records:
            self._records[key] = attestations.attested(self.store, key, self.trusted)
        return self._records[key]

    def of(self, key: str | None, kind: type[R]) -> R | None:
        """The verified record of `key` if it is of `kind` (None: no key, no record, or another kind's)."""
        return of_kind(self.record(key), kind) if key else None

    def signature(self, entry: CatalogEntry) -> Signed:
        """The entry's signature verified for its own name (SignatureRefused: it does not hold), once per entry
        document: an entry read again in its write verifies without a second signature check."""
        mark = digest(entry.model_dump(mode="json"))
        if mark not in self._signed:
            try:
                self._signed[mark] = signed(entry, entry.model, entry.quantization, self.trusted)
            except SignatureRefused as e:
                self._signed[mark] = e
        found = self._signed[mark]
        if isinstance(found, SignatureRefused):
            raise found
        return found

    def doc(self, record: BuildRecord, name: str) -> dict[str, Any]:
        file = next(f for f in record.files if f.path == name)
        if file.sha256 not in self._docs:
            self._docs[file.sha256] = read_blob_json(self.store, file)
        return self._docs[file.sha256]


def library_validation(
    lib: LibraryRecord, model: str, convert: BuildRecord, config: BuildRecord, rec: Records
) -> Validation:
    """The library's validation for this model's weights."""
    assert lib.validation is not None
    if lib.validated_with == {"model": model, "convert": convert.key, "config": config.key}:
        return lib.validation
    if lib.library_metadata is None:  # it could not be loaded where it was built: nothing to compare
        fits = lib.validation.fits
    else:
        cache, config_doc = rec.doc(convert, "tensor-cache.json"), rec.doc(config, "mlc-chat-config.json")
        fits = fit_check(lib.library_metadata, cache, config_doc)
    return Validation(fits=fits, run=lib.validation.run)


def cell_fidelity(
    plan: Plan, pc: PlanCell, rec: Records, served: LibRef | None
) -> tuple[Fidelity, RunCheck | None] | str:
    """The cell's fidelity and its run with these weights, or why the cell fails: its check did not complete,
    its numbers are beyond the thresholds, or its KL is far worse than the entry being served has under the
    previous toolchain."""
    if pc.check is None:
        return Fidelity(status="not measured", detail=pc.no_fidelity or "no check was planned"), None
    record = rec.of(pc.check, CheckRecord)
    if record is None or record.fidelity is None:
        return f"its check {pc.check[:12]} did not complete"
    found = record.fidelity
    run = record.validation.run if record.validation and record.validation.run.status == "passed" else None
    if found.measured is None:
        return found, run
    limits = plan.check_builds[pc.check].thresholds
    before = served.fidelity if served and served.check != pc.check and served.fidelity else None
    previous = before.measured.kl_mean if before and before.measured else None
    ok, why = fidelity.judge(found.measured, limits, previous)
    judged = found.model_copy(update={"status": "passed" if ok else "failed", "detail": why, "thresholds": limits})
    return (judged, run) if ok else f"{judged.describe()}"


def _borrow_memory(libs: dict[str, LibRef], served: dict[str, LibRef]) -> None:
    """A library with no memory estimate of its own (not loadable where it was built) takes one of a library
    of the same weights that has one: tonight's, else the one the entry serves (so a failed sibling tonight
    does not change what the entry says)."""
    mine = [(d, ref.memory) for d, ref in sorted(libs.items()) if ref.memory and not ref.memory.borrowed_from]
    theirs = [(d, ref.memory) for d, ref in sorted(served.items()) if ref.memory and not ref.memory.borrowed_from]
    if known := next(iter(mine or theirs), None):
        for ref in libs.values():
            if ref.memory is None:
                ref.memory = known[1].model_copy(update={"borrowed_from": known[0]})


def update_units(
    store: ArtifactStore, plan: Plan, resolved: dict[str, ResolvedSource], known: dict[str, BuildRecord]
) -> list[UnitResult]:
    """Every catalog entry of the plan, the store's `readers` at a time (on S3 each reads and maybe writes a few
    objects): a no-op nightly over thousands of cells stays a matter of seconds."""
    records = Records(store, known)
    units = [(m, q) for m, q in plan.units if m in resolved and resolved[m].error is None]
    return each(lambda u: update_unit(store, plan, resolved[u[0]], u[0], u[1], records), units, store.readers)


def update_unit(
    store: ArtifactStore, plan: Plan, source: ResolvedSource, model: str, quantization: str, rec: Records
) -> UnitResult:
    cells = [pc for pc in plan.units[(model, quantization)] if pc.convert and pc.config]
    result = UnitResult(model=model, quantization=quantization, status="not built")
    if not cells:
        return result
    first = cells[0]
    convert, config = rec.of(first.convert, ConvertRecord), rec.of(first.config, ConfigRecord)
    if convert is None or config is None:
        return result.model_copy(update={"detail": "its convert or config build failed"})
    try:
        current = _trusted(_entry_now(store, model, quantization), rec)
    except DamagedDocumentError as e:
        return result.model_copy(update={"status": "damaged", "detail": _kept_damaged(e)})
    libs, unfit, rejected = {}, {}, 0
    for pc in cells:
        lib = rec.of(pc.library, LibraryRecord)
        if lib is None or lib.validation is None:
            continue
        served = current.libs.get(pc.cell.device) if current else None
        found = _lib_ref(plan, pc, lib, (convert, config), rec, served)
        if isinstance(found, LibRef):
            libs[pc.cell.device] = found
        else:
            unfit[pc.cell.device], failed_fidelity = found
            rejected += failed_fidelity
    if rejected and not libs:
        detail = "no library of these weights passed its fidelity check: the catalog was left as it is"
        return result.model_copy(
            update={"status": "kept previous" if current else "not built", "unfit": unfit, "detail": detail}
        )
    _borrow_memory(
        libs, current.libs if current and (current.convert, current.config) == (convert.key, config.key) else {}
    )
    new = CatalogEntry(
        model=model,
        quantization=quantization,
        source=source.model_dump(include={"kind", "ref", "revision", "identity", "license", "restricted", "files"}),
        convert=convert.key,
        config=config.key,
        libs=libs,
        updated_at=now(),
    )
    return _move_entry(
        store, result.model_copy(update={"unfit": unfit}), current, new, {pc.cell.device for pc in cells}, rec
    )


def _lib_ref(
    plan: Plan,
    pc: PlanCell,
    lib: LibraryRecord,
    weights: tuple[BuildRecord, BuildRecord],
    rec: Records,
    served: LibRef | None,
) -> LibRef | tuple[str, bool]:
    """The cell's library as the entry will serve it, or why not (and whether its fidelity was the reason)."""
    convert, config = weights
    validation = library_validation(lib, pc.cell.model, convert, config, rec)
    if not validation.ok:
        return f"library {lib.key[:12]}: {validation.describe()}", False
    judged = cell_fidelity(plan, pc, rec, served)
    if isinstance(judged, str):
        return judged, True
    cell_fid, run = judged
    if run is not None:
        validation = Validation(fits=validation.fits, run=run)
    device = plan.lib_builds[lib.key].device
    metadata = lib.library_metadata
    needs = memory.estimate(rec.doc(convert, "tensor-cache.json"), metadata) if metadata else None
    check = rec.of(pc.check, CheckRecord)
    return LibRef(
        key=lib.key,
        file=lib.files[0],
        target=device.target,
        host=device.host_triple,
        validation=validation,
        memory=needs,
        fidelity=cell_fid,
        check=pc.check,
        runtime=runtime.of_library(lib.toolchain, device, pc.cell.quantization, lib.cuda_archs),
        jit_keys=(check.jit_keys if check else None) or {},
    )


def _trusted(current: CatalogEntry | None, rec: Records) -> CatalogEntry | None:
    """The entry being served, as far as the farm itself signed it: one whose signature does not verify for its
    name (unsigned, tampered, of another entry) is not merged into what the farm signs next, but replaced by
    tonight's builds (reported in the log)."""
    if current is None:
        return None
    try:
        rec.signature(current)
    except SignatureRefused as e:
        log.warning("%s: not taken as what the farm serves; tonight's builds replace it", e)
        return None
    return current


def _move_entry(
    store: ArtifactStore,
    result: UnitResult,
    current: CatalogEntry | None,
    new: CatalogEntry,
    planned: set[str],
    rec: Records,
) -> UnitResult:
    """Move the entry to `new` if the policy allows (re-decided against what is there at write time), signed; an
    entry that stays is signed again when its signature is due (mlc_farm/catalog/renewal.py)."""
    model, quantization = new.model, new.quantization
    stays = next_entry(current, new, planned) is None
    if (
        stays
        and current
        and not renewal.due(store, current, rec.signature(current), rec.signing_key, rec.record, rec.renew_after)
    ):
        return _stayed(result, current, new, planned).model_copy(update={"entry": current})  # as read: unwritten

    def write(old: dict[str, Any] | None) -> dict[str, Any]:
        # Re-decided against what is there now: another run may have moved the entry meanwhile. What it moves to is
        # signed in the same write, so no reader ever sees an entry without its signature.
        now_there = _trusted(_as_entry(catalog_path(model, quantization), old), rec)
        chosen = next_entry(now_there, new, planned) or now_there or new
        after = renewal.version_of(now_there, rec.signature) if now_there else 0  # above what it replaces
        return sign_entry(store, chosen, rec.signing_key, rec.record, after).model_dump(mode="json")

    try:
        store.update_json(catalog_path(model, quantization), write, replace_damaged=False)
    except DamagedDocumentError as e:
        return result.model_copy(update={"status": "damaged", "detail": _kept_damaged(e)})
    except SignatureRefused as e:
        detail = f"not signed ({e}); the catalog was left as it is"
        return result.model_copy(update={"status": "kept previous" if current else "not built", "detail": detail})
    return (
        _stayed(result, current, new, planned) if stays and current else result.model_copy(update={"status": "moved"})
    )


def _stayed(result: UnitResult, current: CatalogEntry, new: CatalogEntry, planned: set[str]) -> UnitResult:
    if (current.convert, current.config) == (new.convert, new.config):
        return result.model_copy(update={"status": "unchanged"})
    missing = sorted(planned - set(new.libs))
    detail = (
        f"the new builds lack validated libraries for {', '.join(missing)}; the previous complete entry keeps serving"
    )
    return result.model_copy(update={"status": "kept previous", "detail": detail})


def _as_entry(name: str, doc: dict[str, Any] | None) -> CatalogEntry | None:
    """A catalog entry as read, None when missing or of an older schema (replaced: the documented upgrade);
    a schema 2 entry that does not validate is damaged, never replaced by one that may have less in it."""
    if doc is None or doc.get("schema_version") != SCHEMA_VERSION:
        return None
    try:
        return CatalogEntry.model_validate(doc)
    except ValidationError as e:
        raise DamagedDocumentError(f"{name} is damaged ({first_problem(e)})") from None


def _entry_now(store: ArtifactStore, model: str, quantization: str) -> CatalogEntry | None:
    """The entry as it is now; a read that does not parse is read again once (a garbled answer), and a second
    damaged read is DamagedDocumentError."""
    name = catalog_path(model, quantization)
    try:
        return _as_entry(name, store.read_json(name))
    except DamagedDocumentError:
        return _as_entry(name, store.read_json(name))


def _kept_damaged(e: DamagedDocumentError) -> str:
    return (
        f"{e}: it was kept as it is, not replaced by an entry that may list fewer libraries; repair or delete "
        "it (`mlc-farm verify` names it), then run again"
    )


def next_entry(current: CatalogEntry | None, new: CatalogEntry, planned: set[str]) -> CatalogEntry | None:
    """What the catalog should hold after a run, or None to leave it as it is.

    - Same convert and config builds as now: add or replace the libraries that were built and validated, keep
      the others (a device that failed tonight keeps last night's library of the same weights).
    - New weights: move only when every planned device has a validated library, or when nothing better is
      being served (no entry yet, or one that covers no more devices). Otherwise the previous entry keeps
      serving: a nightly whose compiles all fail must not switch users to weights with no libraries.
    """
    if current and (current.convert, current.config) == (new.convert, new.config):
        libs = {**current.libs, **new.libs}
        merged = new.model_copy(update={"libs": libs, "missing": sorted(planned - set(libs))})
        same = libs == current.libs  # a library's validation or memory estimate for these weights counts too
        return None if same and merged.missing == current.missing and merged.source == current.source else merged
    new = new.model_copy(update={"missing": sorted(planned - set(new.libs))})
    if not new.missing or current is None:
        return new
    if current.missing and set(current.libs) <= set(new.libs):
        return new
    return None
