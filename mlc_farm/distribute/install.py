"""`mlc-farm install`: a catalog entry put where mlc_llm's own resolution looks, so `mlc_llm chat HF://ORG/NAME`,
`mlc_llm serve HF://ORG/NAME` and `MLCEngine("HF://ORG/NAME")` run the farm's build with no download and no
compile (shared/mlc-reference, "How mlc_llm itself finds a model and its library").

The weights, config and tokenizer go to `MLC_LLM_HOME/model_weights/hf/ORG/NAME` (staged, then swapped in),
each library to `MLC_LLM_HOME/model_lib/<md5>.<ext>` under the JIT key of the engine's defaults for every
local device of its kind, computed by the local toolchain. Every conflict is found before anything is written;
what is already there and identical is left alone, so installing twice is a no-op.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlc_farm.catalog.published import signed_published
from mlc_farm.checks import runtime
from mlc_farm.devices import runs_here
from mlc_farm.digests import file_sha256
from mlc_farm.errors import BadInput
from mlc_farm.output_dir import replacing, scratch
from mlc_farm.records.folder import LIB_DIR, entry_files, lib_path
from mlc_farm.records.reads import read_blob_json
from mlc_farm.records.schema import CatalogEntry, FileEntry, LibRef
from mlc_farm.store import ArtifactStore
from mlc_farm.toolchain import jit
from mlc_farm.toolchain.info import ToolchainInfo
from mlc_farm.toolchain.jit import JitKey
from mlc_farm.trust.entry_signatures import trusted_entry


@dataclass
class Installed:
    weights: Path
    weights_written: bool
    libraries: dict[str, Path] = field(default_factory=dict)  # device string -> cache file
    chosen: dict[str, str] = field(default_factory=dict)  # device string -> the catalog device of its library
    written: list[str] = field(default_factory=list)  # device strings whose file was (re)written
    replaced: list[str] = field(default_factory=list)  # what --force replaced, said as such
    # catalog devices whose library was left out: a driver is here, but the toolchain's runtime has no such device
    not_here: dict[str, str] = field(default_factory=dict)


def default_name(store: ArtifactStore, entry: CatalogEntry) -> str:
    """The Hub repo the farm signed that it published the entry to, else `mlc-farm/{model}-{quant}-MLC`."""
    doc = signed_published(store, entry.model, entry.quantization)
    return doc.repo if doc else f"mlc-farm/{entry.model}-{entry.quantization}-MLC"


def check_name(name: str) -> str:
    parts = name.split("/")
    if len(parts) != 2 or not all(
        p and p not in (".", "..") and p.replace("-", "").replace("_", "").replace(".", "").isalnum() for p in parts
    ):
        raise BadInput(f"--as {name!r}: give ORG/NAME (letters, digits, '-', '_', '.'), as in HF://ORG/NAME")
    return name


def _for_these_gpus(chosen: dict[str, LibRef], gpu_archs: list[str]) -> dict[str, LibRef]:
    """The CUDA libraries with binaries for the local GPUs (all of them when none has: the refusal then says
    why), those holding the GPUs' own architecture first; other kinds as they are."""
    runs = {d: r for d, r in chosen.items() if r.runtime is None or runtime.arch_runs(r.runtime, gpu_archs)}
    exact = {d: r for d, r in runs.items() if r.runtime and set(r.runtime.needs.cuda_archs) & set(gpu_archs)}
    cuda = [d for d, r in chosen.items() if r.runtime and r.runtime.needs.cuda_archs]
    best = exact or {d: r for d, r in runs.items() if d in cuda} or {d: chosen[d] for d in cuda}
    return {d: r for d, r in chosen.items() if d not in cuda} | best


def chosen_libraries(
    entry: CatalogEntry,
    device: str | None,
    built_with: str | None,
    local: ToolchainInfo,
    gpu_archs: list[str] | None = None,
) -> dict[str, LibRef]:
    """`device`'s library, or those whose device is on this machine; of the runtime `built_with` names, else
    those the local runtime can load when it can load any (a mismatch is then refused with the reason); of CUDA
    libraries, those with binaries for the local GPUs (`gpu_archs`, from nvidia-smi). One library per mlc_llm
    device kind: they would share its JIT cache name."""
    what = f"{entry.model} {entry.quantization}"
    chosen = _for_device(entry, device, what)
    if built_with is not None:
        chosen = {d: chosen[d] for d in runtime.built_with({d: r.runtime for d, r in chosen.items()}, built_with, what)}
    elif local.known:
        loadable = {d: r for d, r in chosen.items() if r.runtime and runtime.same_runtime(r.runtime, local)}
        chosen = loadable or chosen
    if device is None and gpu_archs:
        chosen = _for_these_gpus(chosen, gpu_archs)
    _one_per_jit_kind(chosen)
    return chosen


def _for_device(entry: CatalogEntry, device: str | None, what: str) -> dict[str, LibRef]:
    """`device`'s library, or every library for a device on this machine."""
    if device is not None:
        if device not in entry.libs:
            raise BadInput(
                f"--device {device!r}: {what} has libraries for {', '.join(sorted(entry.libs)) or 'no device'}"
            )
        return {device: entry.libs[device]}
    chosen = {d: ref for d, ref in entry.libs.items() if runs_here(ref.target)}
    if not chosen:
        raise BadInput(
            f"none of the libraries of {what} ({', '.join(sorted(entry.libs))}) is for a device on this "
            "machine; name one with --device"
        )
    return chosen


def _one_per_jit_kind(chosen: dict[str, LibRef]) -> None:
    """Refuse libraries mlc_llm does not load from its cache, and two that would share one JIT cache name."""
    for name, ref in chosen.items():
        kind = jit.jit_device(ref.target)
        if kind is None:
            raise BadInput(
                f"--device {name}: a {ref.target} library is not loaded by mlc_llm (WebLLM fetches it: "
                "`mlc-farm export webllm`)"
            )
        if kind in jit.SYSTEM_LIBRARY_DEVICES:
            raise BadInput(
                f"--device {name}: a {ref.target} library is linked into an app by `mlc_llm package`, "
                "not loaded from the cache: `mlc-farm export app`"
            )
    kinds: dict[str, list[str]] = {}
    for name, ref in sorted(chosen.items()):
        kinds.setdefault(str(jit.jit_device(ref.target)), []).append(name)
    if shared := next((names for names in kinds.values() if len(names) > 1), None):
        raise BadInput(
            f"{', '.join(shared)} would share mlc_llm's JIT cache name on this machine: choose one with "
            "--device (or --runtime)"
        )


def _differs(path: Path, want: FileEntry) -> bool:
    return not path.is_file() or path.stat().st_size != want.size or file_sha256(path) != want.sha256


def _weight_files(store: ArtifactStore, entry: CatalogEntry) -> dict[str, FileEntry]:
    return {p: f for p, f in entry_files(store, entry).items() if not p.startswith(f"{LIB_DIR}/")}


def install(
    store: ArtifactStore,
    model: str,
    quantization: str,
    home: Path,
    name: str,
    local: ToolchainInfo,
    device: str | None = None,
    indices: list[int] | None = None,
    force: bool = False,
    any_runtime: bool = False,
    gpu_archs: list[str] | None = None,
    built_with: str | None = None,
    allow_unsigned: bool = False,
    allow_expired: bool = False,
) -> Installed:
    trusted = trusted_entry(store, model, quantization, allow_unsigned, allow_expired)
    entry = trusted.entry
    libs = chosen_libraries(entry, device, built_with, local, gpu_archs)
    if not any_runtime:
        runtime.refuse_mismatched({d: ref.runtime for d, ref in libs.items()}, local, gpu_archs)
    files = _weight_files(store, entry)
    # Every file to be written is the one the farm signed, before anything is written.
    trusted.check(files | {lib_path(entry, d): ref.file for d, ref in libs.items()}, whole=False)
    weights = jit.weights_dir(home, check_name(name))
    stale = [p for p, f in files.items() if _differs(weights / p, f)] if weights.exists() else list(files)
    result = Installed(weights=weights, weights_written=bool(stale))
    if weights.exists() and stale and not force:
        raise BadInput(
            f"{weights} holds other weights ({len(stale)} of {len(files)} files differ, e.g. {stale[0]}): "
            "--force replaces them"
        )
    config = read_blob_json(store, files["mlc-chat-config.json"])
    with scratch(Path(tempfile.gettempdir()), "mlc-farm-install") as tmp:
        planned: dict[str, tuple[Path, LibRef]] = {}
        fetched: dict[str, Path] = {}  # each library once, by sha256: counted devices with it, copied from it
        for lib_name, ref in sorted(libs.items()):
            lib_copy = fetched.setdefault(ref.file.sha256, Path(tmp) / f"{lib_name}-{ref.file.path}")
            if not lib_copy.exists():
                store.get_blob(ref.file.sha256, lib_copy, size=ref.file.size)
            found = _jit_keys(config, lib_name, ref, lib_copy, indices, required=device is not None)
            if not found:
                result.not_here[lib_name] = f"no {jit.jit_device(ref.target)} device in this toolchain's runtime"
            for dev, key in found.items():
                planned[dev] = (jit.cache_file(home, key, dev), ref)
                result.chosen[dev] = lib_name
        if not planned:
            raise BadInput(
                f"none of the libraries of {model} {quantization} runs here: "
                + "; ".join(f"{d}: {why}" for d, why in result.not_here.items())
            )
        result.replaced = _replaced(planned, force)
        if result.weights_written:
            if weights.exists():
                result.replaced.append(f"{weights} ({len(stale)} files differed)")
            with replacing(weights, "--as", replace=True) as staging:
                for rel, f in files.items():
                    store.get_blob(f.sha256, staging / rel, size=f.size)
        _write_libraries(home / "model_lib", planned, fetched, result)
    return result


def _jit_keys(
    config: dict[str, Any], lib_name: str, ref: LibRef, lib_copy: Path, indices: list[int] | None, required: bool
) -> dict[str, JitKey]:
    """The JIT key of each device this library is installed for: the indices asked, else CPU 0, else every
    device of its kind the toolchain's runtime has (none: a library chosen by default is left out, one named
    with --device is refused)."""
    kind = jit.jit_device(ref.target)
    assert kind is not None
    if indices is not None:
        found = jit.keys(config, [f"{kind}:{i}" for i in indices])
    elif kind == "cpu":
        found = jit.keys(config, ["cpu:0"])
    else:
        found = jit.keys(config, [], present=(lib_copy, kind))
    if not found and required:
        raise BadInput(f"--device {lib_name}: no {kind} device here to key its library by; give --device-index")
    return found


def _replaced(planned: dict[str, tuple[Path, LibRef]], force: bool) -> list[str]:
    """The JIT cache files that hold another library: refused unless `force`; what will be replaced."""
    conflicts = [(dev, path) for dev, (path, ref) in planned.items() if path.exists() and _differs(path, ref.file)]
    if conflicts and not force:
        dev, path = conflicts[0]
        raise BadInput(
            f"{path} (the JIT cache file of {dev}) holds another library ({path.stat().st_size} bytes, "
            f"sha256 {file_sha256(path)[:12]}): --force replaces it"
        )
    return [f"{path} ({file_sha256(path)[:12]})" for _, path in conflicts]


def _write_libraries(
    lib_dir: Path, planned: dict[str, tuple[Path, LibRef]], fetched: dict[str, Path], result: Installed
) -> None:
    """Each device's library under its JIT cache name: a whole copy, renamed into place (never a partial
    library under its name), from the copy fetched and checked against its sha256."""
    _remove_old_parts(lib_dir)
    with scratch(lib_dir, "mlc-farm-install") as copies:
        for dev, (path, ref) in sorted(planned.items()):
            result.libraries[dev] = path
            if path.exists() and not _differs(path, ref.file):
                continue
            part = copies / path.name
            shutil.copyfile(fetched[ref.file.sha256], part)
            os.replace(part, path)
            result.written.append(dev)


def _remove_old_parts(lib_dir: Path) -> None:
    """Partial copies (`.<name>.<pid>.part`) that installs of mlc-farm before the locked scratch directory left
    when killed: removed once their process is gone."""
    for part in lib_dir.glob(".*.*.part") if lib_dir.is_dir() else []:
        pid = part.name.split(".")[-2]
        if not pid.isdigit() or not part.is_file() or part.is_symlink():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except OSError:
            continue  # alive (another user's): left alone
