"""One build, start to finish, without Prefect: run the toolchain steps, store blobs, then the record.

The toolchain never sees a source directory: it runs on a staging directory of links to the source's files
in the build's own work directory, so what it writes there (convert_weight writes
`model.safetensors.index.json` into its input) never touches a model store or a Hugging Face cache, and two
builds of one source do not race. A library is validated before its record is written: a library that does
not fit its weights or does not run is a failed build, never a record.

The Prefect tasks in `tasks/builds.py` wrap these; they can also run on a worker that has only the store.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypedDict

from mlc_farm.building.workdirs import workdir
from mlc_farm.checks import device_code, fidelity, fidelity_metrics, fit, runtime, speed, validate
from mlc_farm.checks.fidelity import Fidelity
from mlc_farm.checks.results import RunCheck, Validation
from mlc_farm.devices import family as device_family
from mlc_farm.digests import file_sha256
from mlc_farm.errors import BuildFailed, LibraryLoadError, StoreError, ToolchainError, ValidationFailed
from mlc_farm.formatting import size
from mlc_farm.matrix import fidelity_rules
from mlc_farm.planning.plan import CheckBuild, ConfigBuild, ConvertBuild, LibBuild, ModelBuilds, ReferenceBuild
from mlc_farm.planning.sources import SourceFiles
from mlc_farm.records.reads import load_record, read_blob_json, reference_distributions
from mlc_farm.records.schema import (
    RECORD,
    BuildRecord,
    ConfigRecord,
    ConvertRecord,
    FailedCell,
    FailureRecord,
    FileEntry,
    Kind,
    LibraryRecord,
    R,
    now,
    of_kind,
    referenced_blobs,
    stored,
)
from mlc_farm.report import activity
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore, lease
from mlc_farm.store.layout import blob_url, failure_path, record_path
from mlc_farm.toolchain import invoke, jit
from mlc_farm.toolchain.commands import compile_args, compile_env, convert_weight_args, gen_config_args
from mlc_farm.toolchain.jit import JitKey
from mlc_farm.trust import attestations, keys

LIB_FILE = "model-lib"


def hash_files(paths: dict[str, Path], workers: int = 4) -> dict[str, str]:
    """name -> sha256 of every file, hashed in parallel."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(paths, pool.map(file_sha256, paths.values()), strict=True))


def store_files(
    store: ArtifactStore,
    paths: dict[str, Path],
    hashes: dict[str, str] | None = None,
    workers: int = 4,
    progress: Callable[[int], None] | None = None,
) -> list[FileEntry]:
    """Put every file as the blob of its sha256 (`hashes`, else hashed here; blobs already there are skipped)
    and list them for the record."""
    hashes = hashes or hash_files(paths, workers)

    def one(item: tuple[str, Path]) -> FileEntry:
        name, path = item
        store.put_blob(path, hashes[name], progress)
        return FileEntry(path=name, size=path.stat().st_size, sha256=hashes[name])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sorted(pool.map(one, paths.items()), key=lambda f: f.path)


def _timeout(timeout: float | None) -> float:
    """A step's time limit: given, else MLC_FARM_STEP_TIMEOUT (generous: real models take up to hours)."""
    return timeout if timeout is not None else load_settings().step_timeout


def _outputs(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}


class Found(TypedDict, total=False):
    """The record fields a kind's steps find (a library's metadata and validation, a check's fidelity): typed,
    so a misspelt one is a type error where it is set."""

    library_metadata: dict[str, Any] | None
    validation: Validation | None
    validated_with: dict[str, str] | None
    cuda_archs: list[str] | None
    fidelity: Fidelity | None
    cell: dict[str, str] | None
    jit_keys: dict[str, JitKey] | None


@dataclass(frozen=True)
class Made:
    """What a build's steps made: each step's seconds, the output files by name, and the fields they found."""

    seconds: dict[str, float]
    outputs: dict[str, Path]
    found: Found = field(default_factory=lambda: Found())


Steps = Callable[[Path, Path], Made]


@dataclass(frozen=True)
class Subject:
    """What is built: the key and its inputs, and the cells it is for (named in a failure record)."""

    key: str
    kind: Kind
    inputs: dict[str, Any]
    label: str
    cells: list[FailedCell]
    toolchain: dict[str, Any] | None = None  # the toolchain that runs it, when its key does not hold it (a fingerprint)


def _run_steps(store: ArtifactStore, subject: Subject, steps: Steps, flow_run: str | None, force: bool) -> BuildRecord:
    """Under the key's lease, run `steps(work, log)` -> what they made, then store
    the blobs and the record. When another run holds the lease, its record is waited for and returned. The
    signing key is read first: a build that could not sign what it made does not start."""
    started, key = now(), subject.key
    signing_key, trusted = keys.signing_key(), keys.trusted_keys()

    def built_meanwhile() -> BuildRecord | None:
        """A whole build of this key that another run finished and signed (forced: since this build started)."""
        record = attestations.attested(store, key, trusted)
        if record is None or (force and record.finished_at < started):
            return None
        return record if all(store.has_blob(f.sha256) for f in referenced_blobs(record)) else None

    with (
        activity.phase(key, "taking the lease"),
        lease.held(store, key, load_settings().lease_seconds, built_meanwhile) as holding,
    ):
        if holding.elsewhere is None:
            holding.elsewhere = built_meanwhile()  # the other run may have finished just before the lease was free
        if holding.elsewhere is not None:
            record: BuildRecord = holding.elsewhere
            return record
        return _build(store, subject, steps, flow_run, started, holding, signing_key)


def _build(
    store: ArtifactStore,
    subject: Subject,
    steps: Steps,
    flow_run: str | None,
    started: datetime,
    holding: lease.Holding,
    signing_key: keys.SigningKey,
) -> BuildRecord:
    """The build itself: steps in a scratch directory, blobs, then the record (last, for readers). A failure
    leaves a failure record with the log instead, until the key builds. The blobs are named in the lease before
    any is put, so a gc running meanwhile keeps them."""
    key, inputs = subject.key, subject.inputs
    work = workdir(key)
    log_path = work / "build.log"
    try:
        try:
            made = steps(work, log_path)
        except (ToolchainError, ValidationFailed) as e:
            log = _record_failure(store, subject, e, log_path, flow_run, holding)
            raise BuildFailed(str(e), blob_url(store.url, log.sha256) if log else None) from None
        # The outputs are on disk: hashed here and signed before anything leaves this process (what the store
        # says later is never what is signed); the store's retries wait out an outage; the toolchain never runs again.
        outputs = made.outputs
        hashes = hash_files({**outputs, "build.log": log_path})
        listed = {n: FileEntry(path=n, size=p.stat().st_size, sha256=hashes[n]) for n, p in outputs.items()}
        # The record of the subject's kind: a field its kind does not have is refused here, not dropped.
        record = RECORD.validate(
            dict(
                key=key,
                kind=subject.kind,
                files=sorted(listed.values(), key=lambda f: f.path),
                inputs=inputs,
                toolchain=subject.toolchain or inputs.get("toolchain", {}),  # {} for a reference: the same under all
                started_at=started,
                finished_at=now(),
                seconds=made.seconds,
                log=FileEntry(path="build.log", size=log_path.stat().st_size, sha256=hashes["build.log"]),
                flow_run=flow_run,
                host=socket.gethostname(),
                image=os.environ.get("MLC_FARM_IMAGE"),
                **made.found,
            )
        )
        record = attestations.attest(record, signing_key)
        _upload(store, key, {**outputs, "build.log": log_path}, hashes, holding)
        # Last: only now does the build exist for readers, with every blob already in place.
        store.write_json(record_path(key), stored(record))
        store.delete(failure_path(key))  # an earlier failure of this key is history now
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _record_failure(
    store: ArtifactStore,
    subject: Subject,
    error: Exception,
    log_path: Path,
    flow_run: str | None,
    holding: lease.Holding,
) -> FileEntry | None:
    """A failure record with the build's log, kept until the key builds; the log's entry."""
    log = None
    if log_path.exists():
        hashes = hash_files({"build.log": log_path})
        holding.announce(list(hashes.values()))
        log = store_files(store, {"build.log": log_path}, hashes)[0]
    failure = FailureRecord(key=subject.key, kind=subject.kind, label=subject.label, cells=subject.cells,
                            error=str(error), log=log, failed_at=now(), flow_run=flow_run,
                            host=socket.gethostname())  # fmt: skip
    store.write_json(failure_path(subject.key), failure.model_dump(mode="json"))
    return log


def _upload(
    store: ArtifactStore, key: str, files: dict[str, Path], hashes: dict[str, str], holding: lease.Holding
) -> None:
    """The outputs and the log as the blobs of the digests the build signed, named in the lease first; the status
    line counts the bytes sent. A file changed since it was hashed is refused by the store (its digest differs)."""
    with activity.phase(key, "uploading"):
        total, sent = sum(p.stat().st_size for p in files.values()), Counter[str]()

        def uploaded(n: int) -> None:
            sent["bytes"] += n
            activity.rename(key, f"uploading {size(sent['bytes'])} of {size(total)}")

        holding.announce(list(hashes.values()))
        store_files(store, files, hashes, progress=uploaded)


def build_from_source(
    store: ArtifactStore,
    b: ConvertBuild | ConfigBuild,
    source: SourceFiles,
    convert_device: str,
    *,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    flow_run: str | None = None,
    force: bool = False,
) -> BuildRecord:
    """A build that reads the source: convert_weight (params_shard_*.bin, tensor-cache.json) or gen_config
    (mlc-chat-config.json and the tokenizer files), on a staging directory of the source."""

    def steps(work: Path, log: Path) -> Made:
        src, out = source.stage(work / b.model), work / "out"
        if isinstance(b, ConvertBuild):
            step = "convert_weight"
            args = convert_weight_args(src, b.quantization, out, convert_device, b.model_type)
        else:
            step = "gen_config"
            args = gen_config_args(src, b.quantization, b.conv_template, b.overrides, out, b.model_type)
        cell = f"{b.model}/{b.quantization}"
        with activity.phase(b.key, step):
            seconds = invoke.run(step, args, cell=cell, log_path=log, timeout=_timeout(timeout), on_line=on_line)
        return Made({step: seconds}, _outputs(out))

    subject = Subject(
        b.key,
        b.kind,
        b.inputs,
        f"{b.kind} {b.model}/{b.quantization}",
        [FailedCell(model=b.model, quantization=b.quantization)],
        b.toolchain if isinstance(b, ConvertBuild) else None,
    )
    return _run_steps(store, subject, steps, flow_run, force)


def _record(store: ArtifactStore, key: str, kind: type[R], what: str) -> R:
    record = of_kind(load_record(store, key), kind)
    if record is None:
        raise StoreError(f"{what} {key[:12]} has no build record of its kind in {store.url}")
    return record


def _weights(store: ArtifactStore, builds: ModelBuilds) -> tuple[ConvertRecord, ConfigRecord]:
    """The records of the convert and config builds a library runs with."""
    return (
        _record(store, builds.convert, ConvertRecord, "convert build"),
        _record(store, builds.config, ConfigRecord, "config build"),
    )


def _file(record: BuildRecord, name: str) -> FileEntry:
    return next(f for f in record.files if f.path == name)


def build_library(
    store: ArtifactStore,
    lb: LibBuild,
    builds: ModelBuilds,
    *,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    flow_run: str | None = None,
    force: bool = False,
) -> BuildRecord:
    """compile the mlc-chat-config.json of `builds` for one target, then validate the library against that
    model's weights: its metadata must fit them, and where the device is present it must run."""
    convert, config = _weights(store, builds)
    lib_name = f"{LIB_FILE}.{lb.device.library_ext}"
    users = ", ".join(f"{c.model}/{c.quantization}/{c.device}" for c in lb.users)

    def steps(work: Path, log: Path) -> Made:
        config_path = work / "config" / "mlc-chat-config.json"
        chat = _file(config, "mlc-chat-config.json")
        store.get_blob(chat.sha256, config_path, size=chat.size)
        args = compile_args(config_path, lb.device, lb.overrides, work / lib_name)
        env = compile_env(lb.device)
        with activity.phase(lb.key, "compile"):
            seconds = invoke.run(
                "compile", args, cell=users, log_path=log, timeout=_timeout(timeout), env=env, on_line=on_line
            )
        found = Found()
        if (needs := runtime.needs_of(lb.device, lb.quantization)).device == "cuda":
            # The device code it holds, read where it is built: a library without a binary for its
            # architectures is not built, whatever the compile said.
            code = device_code.cuda_code((work / lib_name).read_bytes())
            if problem := device_code.cuda_problem(code, needs.cuda_archs):
                raise ValidationFailed(f"library for {users}: {problem}")
            found["cuda_archs"] = code.archs
        with activity.phase(lb.key, "validating"):
            metadata, validation = _validate(store, lb, builds, work, convert, config, _timeout(timeout))
        with log.open("a", encoding="utf-8") as f:
            f.write(f"validation with {builds.model}'s weights: {validation.model_dump_json()}\n")
        if on_line:
            on_line(f"validation with {builds.model}'s weights: {validation.describe()}")
        if not validation.ok:
            raise ValidationFailed(f"library for {users} failed validation: {validation.describe()}")
        found.update(Found(library_metadata=metadata, validation=validation, validated_with=builds.model_dump()))
        return Made({"compile": seconds}, {lib_name: work / lib_name}, found)

    cells = [FailedCell(model=c.model, quantization=c.quantization, device=c.device) for c in lb.users]
    subject = Subject(lb.key, "library", lb.inputs, f"library {lb.device.name}/{lb.quantization}", cells)
    with invoke.on_pool(lb.device.work_pool):  # the toolchain of the device's pool compiles and loads it
        return _run_steps(store, subject, steps, flow_run, force)


def _fetch_model(store: ArtifactStore, convert: BuildRecord, config: BuildRecord, into: Path) -> Path:
    """The weights, mlc-chat-config.json and tokenizer a library runs with, as one directory."""
    for f in [*convert.files, *config.files]:
        store.get_blob(f.sha256, into / f.path, size=f.size)
    return into


def _validate(
    store: ArtifactStore,
    lb: LibBuild,
    builds: ModelBuilds,
    work: Path,
    convert: BuildRecord,
    config: BuildRecord,
    timeout: float,
) -> tuple[dict[str, Any] | None, Validation]:
    tensor_cache = read_blob_json(store, _file(convert, "tensor-cache.json"))
    chat_config = read_blob_json(store, _file(config, "mlc-chat-config.json"))
    weights = None
    if device_family(lb.device.family).missing_here() is None:  # the weights are only needed to run it
        weights = _fetch_model(store, convert, config, work / "model")
    lib = work / f"{LIB_FILE}.{lb.device.library_ext}"
    return validate.validate_library(lib, lb.device, builds.model, tensor_cache, chat_config, weights, timeout)


def build_reference(
    store: ArtifactStore,
    rb: ReferenceBuild,
    source: SourceFiles,
    *,
    timeout: float | None = None,
    flow_run: str | None = None,
    force: bool = False,
) -> BuildRecord:
    """The source's reference distributions over the evaluation tokens, from transformers in float32 in the
    toolchain's interpreter."""

    def steps(work: Path, log: Path) -> Made:
        source_dir = source.stage(work / rb.model)
        config = json.loads((source_dir / "config.json").read_text())
        tokens = fidelity_metrics.eval_tokens(source_dir / "tokenizer.json", rb.positions, int(config["vocab_size"]))
        request = validate.write_request(work / "request.json", tokens.tokens, None)
        with activity.phase(rb.key, "reference pass"):
            try:
                out = invoke.in_toolchain("reference.py", [str(source_dir), str(request)], _timeout(timeout),
                                            ("the reference pass", "make the reference pass"))  # fmt: skip
            except LibraryLoadError as e:
                raise ValidationFailed(str(e)) from None
        if "unavailable" in out:
            raise ValidationFailed(f"the reference pass cannot run: {out['unavailable']}")
        dist = fidelity.Distributions(method=f"{fidelity_rules.METHOD_TRANSFORMERS} ({rb.tools})",
                                      tokens=tokens.tokens, seeded=tokens.seeded, **out)  # fmt: skip
        with log.open("a", encoding="utf-8") as f:
            f.write(f"reference of {rb.model}: {dist.method}, {tokens.describe()}, {dist.seconds:.1f} s\n")
        path = work / "out" / validate.REFERENCE_FILE
        path.parent.mkdir(parents=True)
        path.write_text(dist.model_dump_json())
        return Made({"reference": dist.seconds or 0.0}, {validate.REFERENCE_FILE: path})

    subject = Subject(rb.key, "reference", rb.inputs, f"reference {rb.model}", [])
    return _run_steps(store, subject, steps, flow_run, force)


def check_cell(
    store: ArtifactStore,
    cb: CheckBuild,
    *,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    flow_run: str | None = None,
    force: bool = False,
) -> BuildRecord:
    """The cell on its device: its library with its weights, run (median tokens/s of several timed runs) and
    the teacher-forced pass of fidelity, in one tracked, killable process; a run that fails fails the check. The
    fidelity numbers are judged here against the night's thresholds and again when the catalog moves."""
    lib, (convert, config) = _record(store, cb.library, LibraryRecord, "library"), _weights(store, cb.builds)
    cell = f"{cb.model}/{cb.quantization}/{cb.device.name}"

    def steps(work: Path, log: Path) -> Made:
        tensor_cache = read_blob_json(store, _file(convert, "tensor-cache.json"))
        chat_config = read_blob_json(store, _file(config, "mlc-chat-config.json"))
        fits = fit.fit_check(lib.library_metadata, tensor_cache, chat_config)
        keys = _jit_keys(chat_config, cb, log, timeout)
        fam = device_family(cb.device.family)

        def not_run(why: str, measured: str | None = None) -> Made:
            run, result = (
                RunCheck(status="not run", detail=why),
                Fidelity(status="not measured", detail=measured or why),
            )
            return Made({}, {}, _checked(log, cb, keys, Validation(fits=fits, run=run), result, on_line))

        if (absent := fam.missing_here()) or fam.runtime_device is None:
            return not_run(absent or f"no {cb.device.family} device here", "the library did not run here")
        weights = _fetch_model(store, convert, config, work / "model")
        lib_file = work / lib.files[0].path
        store.get_blob(lib.files[0].sha256, lib_file, size=lib.files[0].size)
        ref = reference_distributions(store, cb.reference) if cb.reference else None
        if isinstance(ref, str):
            return not_run(ref)
        tokens = _eval_tokens(weights, cb, chat_config, ref)
        request = validate.write_request(work / "request.json", tokens.tokens, ref.top_ids if ref else None)
        with activity.phase(cb.key, "run and fidelity"):
            try:
                budget = speed.budget(lib.seconds.get("compile"), load_settings().speed_seconds)
                out = validate.run_library(lib_file, fam.runtime_device, weights, _timeout(timeout), request, budget)
            except LibraryLoadError as e:
                raise ValidationFailed(f"{cell}: {e}") from None
        if lacking := validate.lacks_device(out, fam.runtime_device):
            return not_run(lacking)
        run = RunCheck(**out["run"], device=fam.runtime_device, ran_with=cb.model)
        validation = Validation(fits=fits, run=run)
        if not validation.ok:
            _checked(log, cb, keys, validation, None, on_line)
            raise ValidationFailed(f"{cell} failed its check: {validation.describe()}")
        seconds, outputs, result = _fidelity_of(work, cb, tokens, ref, out["distributions"], fam.runtime_device)
        return Made(seconds, outputs, _checked(log, cb, keys, validation, result, on_line))

    subject = Subject(cb.key, "check", cb.inputs, f"check {cell}",
                      [FailedCell(model=cb.model, quantization=cb.quantization, device=cb.device.name)])  # fmt: skip
    with invoke.on_pool(cb.device.work_pool):
        return _run_steps(store, subject, steps, flow_run, force)


def _eval_tokens(
    weights: Path, cb: CheckBuild, chat_config: dict[str, Any], ref: fidelity.Distributions | None
) -> fidelity.EvalTokens:
    """The reference's tokens, else (this check is the reference) the evaluation text through the model's own
    tokenizer."""
    if ref is not None:
        return fidelity.EvalTokens(tokens=ref.tokens, seeded=ref.seeded)
    return fidelity_metrics.eval_tokens(weights / "tokenizer.json", cb.positions, int(chat_config["vocab_size"]))


def _fidelity_of(
    work: Path,
    cb: CheckBuild,
    tokens: fidelity.EvalTokens,
    ref: fidelity.Distributions | None,
    found: dict[str, Any],
    device: str,
) -> tuple[dict[str, float], dict[str, Path], Fidelity]:
    """The library pass's fidelity: judged against the reference's, or, with none, kept as the reference of
    the other cells of its source on this device."""
    dist = fidelity.Distributions(method=f"{cb.quantization} library on {device}", tokens=tokens.tokens,
                                  seeded=tokens.seeded, **found)  # fmt: skip
    seconds = {"fidelity": dist.seconds or 0.0}
    if ref is None:
        path = work / "out" / validate.DISTRIBUTIONS_FILE
        path.parent.mkdir(parents=True)
        path.write_text(dist.model_dump_json(exclude={"probe_logprobs"}))
        result = Fidelity(status="reference", reference=dist.method, evaluation=tokens.describe(), seconds=dist.seconds)
        return seconds, {validate.DISTRIBUTIONS_FILE: path}, result
    measured = fidelity_metrics.compare(ref, dist)
    ok, why = fidelity.judge(measured, cb.thresholds)
    return seconds, {}, Fidelity(status="passed" if ok else "failed", detail=why, reference=ref.method,
                                 evaluation=tokens.describe(), measured=measured, thresholds=cb.thresholds,
                                 seconds=dist.seconds)  # fmt: skip


def _jit_keys(
    chat_config: dict[str, Any], cb: CheckBuild, log: Path, timeout: float | None
) -> dict[str, JitKey] | None:
    """The names mlc_llm's JIT cache gives this cell's library (the engine's defaults, every device index a
    machine may have): what `mlc-farm install` writes, listed in the entry so anyone can check a cache file."""
    try:
        return jit.keys(chat_config, jit.device_strings(cb.device.target), timeout=_timeout(timeout))
    except LibraryLoadError as e:
        with log.open("a", encoding="utf-8") as f:
            f.write(f"JIT keys not computed: {e}\n")
        return None


def _checked(
    log: Path,
    cb: CheckBuild,
    keys: dict[str, JitKey] | None,
    validation: Validation,
    result: Fidelity | None,
    on_line: Callable[[str], None] | None,
) -> Found:
    """Log the check's outcome; the check record's own fields."""
    line = f"check of {cb.model}/{cb.quantization}/{cb.device.name}: {validation.describe()}" + (
        f"; {result.describe()}" if result else ""
    )
    with log.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
    if on_line:
        on_line(line)
    names = {"model": cb.model, "quantization": cb.quantization, "device": cb.device.name}
    return Found(validation=validation, fidelity=result, cell=names, jit_keys=keys)
