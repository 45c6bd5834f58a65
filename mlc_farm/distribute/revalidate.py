"""`mlc-farm validate`: a build checked again where it was pulled: every file against the catalog's sha256,
then each library for fit and, where its device is here, a run with these weights and its fidelity against
the reference the farm's check used (`reference_distributions`, which a cell's check reads too).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlc_farm.checks import fidelity, fidelity_metrics
from mlc_farm.checks.results import Validation
from mlc_farm.checks.validate import lacks_device, run_library, validate_library, write_request
from mlc_farm.devices import family as device_family
from mlc_farm.devices import target_family
from mlc_farm.digests import file_sha256
from mlc_farm.errors import StoreError
from mlc_farm.matrix.schema import DeviceSpec
from mlc_farm.records.folder import lib_path
from mlc_farm.records.reads import load_record, reference_distributions
from mlc_farm.records.schema import CheckRecord, FileEntry, LibRef, of_kind
from mlc_farm.store import ArtifactStore
from mlc_farm.trust.entry_signatures import Trusted


def validate_pulled(
    store: ArtifactStore, found: Trusted, files: dict[str, FileEntry], directory: Path, device: str | None
) -> dict[str, tuple[Validation, fidelity.Fidelity | None]]:
    """The checks of a build, run again on a pulled directory: every file against the signed entry's sha256
    (`found`, `files`: `trusted_files`), then each library (or `device`'s) for fit and, where its device is here, a
    run with these weights and its fidelity against the reference the farm's check used."""
    entry = found.entry
    model, quantization = entry.model, entry.quantization
    for rel, f in files.items():
        path = directory / rel
        if not path.is_file():
            raise StoreError(f"{path} is missing: pull {model} {quantization} again")
        if file_sha256(path) != f.sha256:
            raise StoreError(f"{path} differs from what the farm built (sha256): pull {model} {quantization} again")
    tensor_cache = json.loads((directory / "tensor-cache.json").read_text())
    chat_config = json.loads((directory / "mlc-chat-config.json").read_text())
    results = {}
    for name, ref in sorted(entry.libs.items()):
        if device not in (None, name):
            continue
        family = target_family(ref.target) or "cpu"
        spec = DeviceSpec(name=name, family=family, target=ref.target, host=ref.host)
        lib = directory / lib_path(entry, name)
        _, validation = validate_library(lib, spec, model, tensor_cache, chat_config, directory)
        runtime = device_family(family).runtime_device
        measured = ref.fidelity
        if validation.ok and validation.run.status == "passed" and runtime:
            with tempfile.TemporaryDirectory(prefix="mlc-farm-fidelity-") as work:
                measured = pulled_fidelity(store, ref, lib, runtime, directory, Path(work), 3600)
        results[name] = (validation, measured)
    return results


def pulled_fidelity(
    store: ArtifactStore, ref: LibRef, lib: Path, runtime: str, weights_dir: Path, work: Path, timeout: float
) -> fidelity.Fidelity:
    """The library's fidelity measured again with these files, against the reference its check used."""
    check = of_kind(load_record(store, ref.check), CheckRecord) if ref.check else None
    if check is None or check.fidelity is None or check.fidelity.measured is None:
        return ref.fidelity or fidelity.Fidelity(status="not measured", detail="the farm measured none")
    reference = reference_distributions(store, check.inputs["reference"])
    if isinstance(reference, str):
        return fidelity.Fidelity(status="not measured", detail=reference)
    request = write_request(work / "request.json", reference.tokens, reference.top_ids)
    out = run_library(lib, runtime, weights_dir, timeout, request)
    if "distributions" not in out:
        why = lacks_device(out, runtime) or out.get("run", {}).get("detail", "it did not run")
        return fidelity.Fidelity(status="not measured", detail=why)
    dist = fidelity.Distributions(
        method="this copy", tokens=reference.tokens, seeded=reference.seeded, **out["distributions"]
    )
    measured = fidelity_metrics.compare(reference, dist)
    limits = check.fidelity.thresholds
    ok, why = fidelity.judge(measured, limits) if limits else (True, "")
    return check.fidelity.model_copy(
        update={"status": "passed" if ok else "failed", "detail": why, "measured": measured, "seconds": dist.seconds}
    )
