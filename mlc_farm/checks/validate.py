"""Is a library fit to ship: does its metadata fit the weights it ships with, does it run where its device is.

The library is loaded in the toolchain's own interpreter (`toolchain/scripts/run_library.py`, run like the probe);
the fit itself is a pure comparison (`mlc_farm/checks/fit.py`) of that metadata with `tensor-cache.json` and
`mlc-chat-config.json`, by the rules of shared/mlc-reference. A library whose device is absent is not run,
and the result says so: nothing claims more than was checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlc_farm.checks import speed
from mlc_farm.checks.fit import fit_check
from mlc_farm.checks.results import FitCheck, RunCheck, Validation
from mlc_farm.devices import family as device_family
from mlc_farm.errors import LibraryLoadError
from mlc_farm.matrix import fidelity_rules
from mlc_farm.matrix.schema import DeviceSpec
from mlc_farm.settings import load_settings
from mlc_farm.toolchain.invoke import in_toolchain

REFERENCE_FILE, DISTRIBUTIONS_FILE = "reference.json", "distributions.json"  # a reference's, a reference check's


def run_library(
    lib: Path,
    device: str,
    weights_dir: Path | None,
    timeout: float,
    request: Path | None = None,
    speed_seconds: float | None = None,
) -> dict[str, Any]:
    """Load `lib` in the toolchain's interpreter on `device`; with weights, also run it, timing its speeds within
    `speed_seconds` (default MLC_FARM_SPEED_SECONDS), and, given a fidelity request, make its teacher-forced
    pass. The script's JSON."""
    args = [str(lib), device]
    if weights_dir:
        seconds = load_settings().speed_seconds if speed_seconds is None else speed_seconds
        plan = json.dumps({**speed.PLAN, "seconds": seconds})
        args += [str(weights_dir), plan, *([str(request)] if request else [])]
    return in_toolchain("run_library.py", args, timeout, ("loading the library", "load the library"))


def lacks_device(result: dict[str, Any], runtime: str) -> str | None:
    """Why the library did not run, when the toolchain's own runtime has no such device (the driver files of the
    machine can only say a device is absent, never that this runtime can use it); None when it ran."""
    return f"no {runtime} device in this toolchain's runtime ({result['absent']})" if "absent" in result else None


def validate_library(
    lib: Path,
    device: DeviceSpec,
    model: str,
    tensor_cache: dict[str, Any],
    chat_config: dict[str, Any],
    weights_dir: Path | None,
    timeout: float = 3600,
) -> tuple[dict[str, Any] | None, Validation]:
    """(metadata, validation) of a freshly built library against one model's weights (`weights_dir`: the
    pulled convert + config outputs, or None to only load it)."""
    fam = device_family(device.family)
    runtime, absent = fam.runtime_device, fam.missing_here()
    if absent or runtime is None:
        return None, Validation(
            fits=FitCheck(
                status="not checked", detail=f"a {device.family} library cannot be loaded without its device"
            ),
            run=RunCheck(status="not run", detail=absent or f"no {device.family} device here"),
        )
    try:
        result = run_library(lib, runtime, weights_dir, timeout)
    except LibraryLoadError as e:
        return None, Validation(
            fits=FitCheck(status="not checked", detail=str(e)),
            run=RunCheck(status="failed", detail=str(e), device=runtime),
        )
    if why := lacks_device(result, runtime):
        return None, Validation(
            fits=FitCheck(
                status="not checked", detail=f"a {device.family} library cannot be loaded without its device"
            ),
            run=RunCheck(status="not run", detail=why),
        )
    metadata = result["metadata"]
    run = (
        RunCheck(**result["run"], device=runtime, ran_with=model)
        if "run" in result
        else RunCheck(status="not run", detail="no weights given", device=runtime)
    )
    return metadata, Validation(fits=fit_check(metadata, tensor_cache, chat_config), run=run)


def write_request(path: Path, tokens: list[int], probe_ids: list[list[int]] | None) -> Path:
    """The teacher-forced pass's input: the evaluation tokens and, to measure against, the reference's top-k."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tokens": tokens, "k": fidelity_rules.TOP_K, "probe_ids": probe_ids}))
    return path
