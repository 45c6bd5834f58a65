"""The `mlc_llm` adapter: the exact commands of shared/mlc-reference, the version probe, log capture.

The command is `python -m mlc_llm` with the current interpreter unless MLC_FARM_MLC_LLM says otherwise
(e.g. `/opt/mlc/bin/python -m mlc_llm`), so a worker image can keep MLC in its own environment.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict

from mlc_farm import stopping
from mlc_farm.errors import StoreError, ToolchainError
from mlc_farm.matrix import Accepted, DeviceSpec, Overrides
from mlc_farm.planning.capabilities import Capabilities
from mlc_farm.processes import kill_group
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import TOOLCHAINS

INSTALL_HINT = (
    "the PyPI packages mlc-llm-nightly-* / mlc-ai-nightly-* are empty placeholders (they install a "
    "package named `mlc`, not `mlc_llm`). Install the real wheels from the MLC wheel index, e.g. "
    "`pip install --pre -f https://mlc.ai/wheels mlc-llm-nightly-cpu mlc-ai-nightly-cpu` "
    "(CUDA 12.8: mlc-llm-nightly-cu128 mlc-ai-nightly-cu128; ROCm 6.2: mlc-llm-nightly-rocm62 "
    "mlc-ai-nightly-rocm62), or point MLC_FARM_MLC_LLM at an interpreter that has them"
)

# Run inside the toolchain's interpreter; prints one JSON object.
_PROBE = r"""
import json, importlib, importlib.util
out = {}
if importlib.util.find_spec("mlc_llm") is None:
    out["error"] = "missing"
    out["placeholder"] = importlib.util.find_spec("mlc") is not None
else:
    import mlc_llm, tvm
    from importlib import metadata
    out["mlc_llm_version"] = getattr(mlc_llm, "__version__", "unknown")
    out["tvm_version"] = getattr(tvm, "__version__", "unknown")
    info = {}
    try:
        info = dict(tvm.support.libinfo())
    except Exception:
        pass
    out["tvm_commit"] = str(info.get("GIT_COMMIT_HASH", "unknown"))
    libinfo = getattr(mlc_llm, "libinfo", None)
    out["mlc_llm_commit"] = str(getattr(libinfo, "__commit__", None) or getattr(mlc_llm, "__commit__", "unknown"))
    dists = [d for d in metadata.distributions() if "mlc_llm" in (d.read_text("top_level.txt") or "").split()
             or (d.metadata["Name"] or "").startswith("mlc-llm")]
    out["mlc_llm_dist"] = ",".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)) or "unknown"
    names = {}
    for key, module, attr in (("conv_templates", "mlc_llm.conversation_template", "ConvTemplateRegistry"),
                              ("model_types", "mlc_llm.model", "MODELS"),
                              ("quantizations", "mlc_llm.quantization", "QUANTIZATION")):
        try:
            found = getattr(importlib.import_module(module), attr)
            names[key] = sorted(found._conv_templates if key == "conv_templates" else found)
        except Exception:
            pass
    if "quantizations" in names:
        out["names"] = names
    # Fidelity's reference pass needs torch and transformers in this interpreter (worker images install them).
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        try:
            import torch, transformers
            out["reference"] = f"transformers {transformers.__version__}, torch {torch.__version__}"
        except Exception:
            pass
# What the pool can compile beyond the wheel: the tools a compile would find in this environment.
import os, shutil, subprocess, sys

def first_line(*cmd):
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [l.strip() for l in (done.stdout + done.stderr).splitlines() if l.strip()]
    return lines if done.returncode == 0 and lines else None

caps = {}
if shutil.which("emcc"):
    caps["emcc"] = (first_line("emcc", "--version") or ["emcc (version unknown)"])[0]
for base in (os.getcwd(), os.environ.get("MLC_LLM_SOURCE_DIR")):
    if base and os.path.isfile(os.path.join(base, "web", "dist", "wasm", "mlc_wasm_runtime.bc")):
        caps["wasm_runtime"] = os.path.join(base, "web", "dist", "wasm", "mlc_wasm_runtime.bc")
        break
if sys.platform == "darwin" and shutil.which("xcrun"):
    found = first_line("xcrun", "-f", "metal")
    caps["xcrun_metal"] = found[0] if found else None
ndk = os.environ.get("TVM_NDK_CC")
if ndk and (os.path.isfile(ndk) or shutil.which(ndk)):
    caps["ndk_cc"] = ndk
if shutil.which("nvcc"):
    said = first_line("nvcc", "--version") or []
    caps["nvcc"] = next((l for l in said if "release" in l), said[-1] if said else "nvcc (version unknown)")
    archs = first_line("nvcc", "--list-gpu-arch") or []
    found = {a.split("_", 1)[1] for a in archs if a.startswith("compute_")}  # as the matrix says them: 80, 90a
    caps["nvcc_archs"] = sorted(found, key=lambda a: (len(a), a))
rocm = "/opt/rocm/.info/version"
if os.path.isfile(rocm):
    caps["rocm"] = "ROCm " + open(rocm).read().strip()
elif shutil.which("hipcc"):
    caps["rocm"] = (first_line("hipcc", "--version") or ["hipcc"])[0]
# What the pool's TVM can offload to (tvm.support.libinfo(), and the flashinfer package): a default --opt that
# needs what it lacks fails at compile (`RuntimeError: cuBLAS is not enabled.`).
if "mlc_llm_version" in out:
    on = lambda key: str(info.get(key, "OFF")).upper() not in ("OFF", "0", "FALSE", "NOTFOUND", "")
    caps["offload"] = {"cublas": on("USE_CUBLAS"), "cutlass": on("USE_CUTLASS"),
                       "flashinfer": on("USE_FLASHINFER") or importlib.util.find_spec("flashinfer") is not None}
out["capabilities"] = caps
print(json.dumps(out))
"""


class ToolchainInfo(BaseModel):
    """The toolchain identity that goes into every build key: a new MLC nightly changes the keys."""

    model_config = ConfigDict(frozen=True)

    mlc_llm_version: str = "unknown"
    mlc_llm_commit: str = "unknown"
    mlc_llm_dist: str = "unknown"
    tvm_version: str = "unknown"
    tvm_commit: str = "unknown"
    error: str | None = None
    # What the toolchain's registries accept (conv templates, model types, quantizations): not part of keys.
    names: Accepted | None = None
    # torch and transformers, when importable beside it: fidelity's reference pass can run (not part of keys).
    reference: str | None = None
    # The pools whose toolchain is another one (its identity): their libraries and checks are keyed by it.
    pools: dict[str, dict[str, str]] = {}
    # What this pool can compile (emcc, nvcc, ...), and every pool's after `of_pools` (not part of keys).
    capabilities: Capabilities = Capabilities()
    pool_capabilities: dict[str, Capabilities] = {}

    def can_build(self, pool: str) -> Capabilities:
        return self.pool_capabilities.get(pool, self.capabilities)

    @property
    def known(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if not self.known:
            return f"unknown ({self.error})"
        return (
            f"mlc_llm {self.mlc_llm_version} ({self.mlc_llm_commit[:12]}), "
            f"tvm {self.tvm_version} ({self.tvm_commit[:12]})"
        )


_pool: contextvars.ContextVar[str | None] = contextvars.ContextVar("mlc_farm_pool", default=None)


@contextlib.contextmanager
def on_pool(pool: str | None) -> Iterator[None]:
    """Toolchain steps in this block are those of `pool` (its MLC_FARM_POOL_MLC_LLM command, if it has one)."""
    token = _pool.set(pool)
    try:
        yield
    finally:
        _pool.reset(token)


def command() -> list[str]:
    """The `mlc_llm` command line prefix: the current pool's (MLC_FARM_POOL_MLC_LLM), else MLC_FARM_MLC_LLM, else
    this Python's."""
    from mlc_farm.settings import load_settings

    settings = load_settings()
    configured = settings.pool_mlc_llm.get(_pool.get() or "") or settings.mlc_llm
    return shlex.split(configured) if configured else [sys.executable, "-m", "mlc_llm"]


def _interpreter(cmd: list[str]) -> str | None:
    """The Python that runs `cmd`, to probe versions with: `X -m mlc_llm` or a script's shebang."""
    if len(cmd) >= 3 and cmd[1] == "-m":
        return cmd[0]
    script = Path(cmd[0]) if os.sep in cmd[0] else None
    if script is None:
        found = shutil.which(cmd[0])
        script = Path(found) if found else None
    if script and script.is_file():
        first = script.open("rb").readline().decode(errors="replace")
        if first.startswith("#!"):
            return first[2:].strip().split()[0]
    return None


def interpreter() -> str | None:
    """The toolchain's Python, where the probe and library validation run (they import its mlc_llm and TVM)."""
    return _interpreter(command())


SNAPSHOT_POOL = "embedded"  # where an embedded build keeps its probe in the store (farm pools use their names)


def names_snapshot(store: ArtifactStore) -> Accepted | None:
    """The names a toolchain accepted, from the newest probe kept in the store (every build keeps its probe
    under `toolchains/`): where no toolchain is installed (a laptop), the matrix is still checked against the
    registries of the one that builds it, and says so."""
    kept = sorted(store.list_with_info(TOOLCHAINS), key=lambda found: found[2], reverse=True)
    for name, _size, when in kept:
        with contextlib.suppress(ValueError, StoreError):
            info = ToolchainInfo.model_validate(store.read_json(name) or {"error": "empty"})
            if info.known and info.names is not None:
                return info.names.model_copy(
                    update={
                        "source": f"a snapshot of the registries of mlc_llm {info.mlc_llm_version}, kept by the "
                        f"probe in {store.url}/{name} on {when:%Y-%m-%d} (no toolchain here)"
                    }
                )
    return None


IDENTITY = ("mlc_llm_version", "mlc_llm_commit", "mlc_llm_dist", "tvm_version", "tvm_commit")


def identity(tc: ToolchainInfo) -> dict[str, str]:
    """What a toolchain is: its versions and commits (not what it accepts or has beside it)."""
    return {f: getattr(tc, f) for f in IDENTITY}


def of_pools(found: dict[str, ToolchainInfo], run_pool: str) -> ToolchainInfo:
    """One run's toolchain from every pool's probe: the run pool's (weights, configs, references), with the
    pools whose toolchain differs listed in `pools`, so each device's libraries are built and keyed by its own.
    Fidelity's reference pass is planned only where every pool has torch and transformers (images from one
    build agree; a mixed farm falls back to its highest-precision builds)."""
    for pool, tc in sorted(found.items()):
        if not tc.known:
            return ToolchainInfo(error=f"pool {pool}: {tc.error}")
    run = found[run_pool]
    others = {pool: identity(tc) for pool, tc in sorted(found.items()) if identity(tc) != identity(run)}
    tools = {tc.reference for tc in found.values()}
    caps = {pool: tc.capabilities for pool, tc in sorted(found.items())}
    return run.model_copy(
        update={"pools": others, "reference": tools.pop() if len(tools) == 1 else None, "pool_capabilities": caps}
    )


def of_pool(tc: ToolchainInfo, pool: str) -> ToolchainInfo:
    """The toolchain a pool builds with: its own when it differs from the run's."""
    return ToolchainInfo(**tc.pools[pool]) if pool in tc.pools else tc


def probe_here(pools: list[str]) -> ToolchainInfo:
    """Every pool on this machine (embedded): each with its MLC_FARM_POOL_MLC_LLM command, else the default one;
    `pools[0]` is the run's (the weights pool)."""
    from mlc_farm.settings import load_settings

    configured = load_settings().pool_mlc_llm
    by_command: dict[str | None, ToolchainInfo] = {}  # pools that share a command share its probe
    found = {}
    for pool in pools:
        if (cmd := configured.get(pool)) not in by_command:
            with on_pool(pool):
                by_command[cmd] = probe()
        found[pool] = by_command[cmd]
    return of_pools(found, pools[0])


def probe(timeout: float = 120) -> ToolchainInfo:
    """Ask the toolchain's own interpreter which mlc_llm and TVM it has, and which names it accepts; never raises."""
    cmd = command()
    python = _interpreter(cmd)
    if python is None:
        return ToolchainInfo(error=f"cannot tell which Python runs {shlex.join(cmd)!r}")
    try:
        done = subprocess.run(
            [python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout, env=toolchain_env(), check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return ToolchainInfo(error=f"probe of {python} failed: {e}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ToolchainInfo(error=f"importing mlc_llm/tvm in {python} failed: {last}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    if data.get("error") == "missing":
        where = " (found the placeholder package `mlc`)" if data.get("placeholder") else ""
        return ToolchainInfo(error=f"mlc_llm is not importable by {python}{where}: {INSTALL_HINT}")
    names = data.pop("names", None)
    accepted = Accepted(**names, source=f"mlc_llm {data.get('mlc_llm_version', 'unknown')} (asked)") if names else None
    return ToolchainInfo(**data, names=accepted)


def convert_weight_args(
    source_dir: Path, quantization: str, out: Path, device: str, model_type: str | None
) -> list[str]:
    args = ["convert_weight", str(source_dir), "--quantization", quantization, "--device", device]
    if model_type:
        args += ["--model-type", model_type]
    return [*args, "-o", str(out)]


def gen_config_args(
    source_dir: Path,
    quantization: str,
    conv_template: str,
    overrides: Overrides,
    out: Path,
    model_type: str | None,
) -> list[str]:
    args = ["gen_config", str(source_dir), "--quantization", quantization, "--conv-template", conv_template]
    for name, value in overrides.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    if model_type:
        args += ["--model-type", model_type]
    return [*args, "-o", str(out)]


def compile_args(config: Path, device: DeviceSpec, overrides: Overrides, out: Path) -> list[str]:
    """`--host` always: left to `auto`, the library carries the CPU of whichever worker compiled it."""
    args = ["compile", str(config), "--device", device.target, "--host", device.host_triple]
    if device.opt:
        args += ["--opt", device.opt]
    if overrides.items():
        args += ["--overrides", ";".join(f"{k}={v}" for k, v in overrides.items())]
    return [*args, "-o", str(out)]


def compile_env(device: DeviceSpec) -> dict[str, str]:
    return {"MLC_MULTI_ARCH": ",".join(device.cuda_archs)} if device.cuda_archs else {}


# What the toolchain may see of our environment: the system, Python, GPU runtimes and MLC/TVM options. Never
# the store's or the Hub's credentials (AWS_*, HF_TOKEN), which it does not need.
_ENV_NAMES = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|SHELL|TERM|TZ|LANG|LANGUAGE|TMPDIR|TEMP|TMP|PYTHONPATH|PYTHONHOME|PYTHONUNBUFFERED"
    r"|VIRTUAL_ENV|CONDA_PREFIX|LD_LIBRARY_PATH|OMP_NUM_THREADS|LC_\w+|CUDA_\w+|NVIDIA_\w+|ROCM_\w+|HIP_\w+"
    r"|HSA_\w+|VK_\w+|TVM_\w+|MLC_(?!FARM_)\w+)\Z"
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def toolchain_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment a toolchain step runs with."""
    return {**{k: v for k, v in os.environ.items() if _ENV_NAMES.match(k)}, **(extra or {})}


def clean_line(raw: str) -> str | None:
    """A log line as a person reads it: no colour codes, and of a progress bar redrawn with carriage returns
    only its last state (None when nothing is left, e.g. a bar erased before the next log line)."""
    text = _ANSI.sub("", raw).rstrip("\n")
    if "\r" not in text:
        return text
    shown = ""
    for part in text.split("\r"):  # what a terminal shows: each redraw overwrites the line from its start
        shown = part + shown[len(part) :]
    return shown.rstrip() or None


# Process groups of the steps running now: what `stop_all` kills when the build is interrupted.
_running: set[int] = set()
_lock = threading.Lock()


def stop_all() -> int:
    """Kill every toolchain step running in this process (each with the compilers it started), and refuse new
    ones: the build is being stopped. How many were killed."""
    with _lock:
        stopping.request()
        groups = list(_running)
    for pgid in groups:
        kill_group(pgid)
    return len(groups)


def accept_steps() -> None:
    """A new build starts: steps may run again after an earlier `stop_all` in this process."""
    stopping.clear()


@contextlib.contextmanager
def _tracked(proc: subprocess.Popen[Any]) -> Iterator[None]:
    """A started toolchain process, known to `stop_all` while the block runs (killed at once if stopping)."""
    with _lock:
        _running.add(proc.pid)
        refused = stopping.requested()
    if refused:
        kill_group(proc.pid)
    try:
        yield
    finally:
        with _lock:
            _running.discard(proc.pid)


def run_captured(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a short program in the toolchain's interpreter (library validation): like `run`, in its own process
    group, with the allow-listed environment, dying with the build and stopped by `stop_all`."""
    proc = subprocess.Popen(
        dies_with_parent(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=toolchain_env(),
        start_new_session=True,
    )
    with _tracked(proc):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def dies_with_parent(cmd: list[str]) -> list[str]:
    """On Linux, `setpriv --pdeathsig KILL` makes the step die if the build process is killed (even by
    SIGKILL), without the thread-unsafe `preexec_fn`; elsewhere the process group is still killed on timeout."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def _stream(
    proc: subprocess.Popen[bytes], log: IO[str], tail: deque[str], on_line: Callable[[str], None] | None
) -> None:
    """A step's output, cleaned, line by line into its log, the tail kept for its error and `on_line`."""
    assert proc.stdout is not None
    for raw in proc.stdout:  # binary: split on \n only, so progress redraws stay within their line
        line = clean_line(raw.decode(errors="replace"))
        if line is None:
            continue
        log.write(line + "\n")
        tail.append(line)
        if on_line:
            on_line(line)


def run(
    step: str,
    args: list[str],
    *,
    cell: str,
    log_path: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
    tail_lines: int = 30,
) -> float:
    """Run one `mlc_llm` step, streaming its output to `on_line` and `log_path`; return seconds taken.

    The step runs in its own process group so a timeout kills compilers it started too.
    """
    full = [*command(), *args]
    tail: deque[str] = deque(maxlen=tail_lines)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(full)}\n")
        log.flush()
        try:
            if shutil.which(full[0]) is None:  # say so here: behind setpriv it would be setpriv's exit code
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), full[0])
            proc = subprocess.Popen(
                dies_with_parent(full),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=toolchain_env(env),
                start_new_session=True,
            )
        except OSError as e:
            raise ToolchainError(step, cell, f"cannot start {full[0]!r}: {e.strerror}", [], log_path) from e
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            with _tracked(proc):
                _stream(proc, log, tail, on_line)
                code = proc.wait()
        finally:
            timer.cancel()
    if timed_out.is_set():
        raise ToolchainError(step, cell, f"timed out after {timeout:g} s and was killed", list(tail), log_path)
    if code != 0:
        said = tool_error(list(tail))
        raise ToolchainError(step, cell, f"exit code {code}" + (f": {said}" if said else ""), list(tail), log_path)
    return time.monotonic() - start


_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception)\b|: error: |invalid choice")


def tool_error(lines: list[str]) -> str | None:
    """The tool's own error line (argparse's `error:`, a Python exception's last line), searched from the end:
    what a person needs first, rather than 30 lines of usage text."""
    return next((line.strip() for line in reversed(lines) if _ERROR_LINE.search(line)), None)
