"""Run inside the toolchain's interpreter by the probe (never imported by mlc_farm): which mlc_llm and TVM it
has, the names its registries accept, the compilers beside it and what its TVM can offload to; one JSON
object on the last line."""

import contextlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

out = {}
if importlib.util.find_spec("mlc_llm") is None:
    out["error"] = "missing"
    out["placeholder"] = importlib.util.find_spec("mlc") is not None
else:
    from importlib import metadata

    import mlc_llm
    import tvm

    out["mlc_llm_version"] = getattr(mlc_llm, "__version__", "unknown")
    out["tvm_version"] = getattr(tvm, "__version__", "unknown")
    info = {}
    with contextlib.suppress(Exception):
        info = dict(tvm.support.libinfo())
    out["tvm_commit"] = str(info.get("GIT_COMMIT_HASH", "unknown"))
    libinfo = getattr(mlc_llm, "libinfo", None)
    out["mlc_llm_commit"] = str(getattr(libinfo, "__commit__", None) or getattr(mlc_llm, "__commit__", "unknown"))
    dists = [
        d
        for d in metadata.distributions()
        if "mlc_llm" in (d.read_text("top_level.txt") or "").split() or (d.metadata["Name"] or "").startswith("mlc-llm")
    ]
    out["mlc_llm_dist"] = ",".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)) or "unknown"
    names = {}
    for key, module, attr in (
        ("conv_templates", "mlc_llm.conversation_template", "ConvTemplateRegistry"),
        ("model_types", "mlc_llm.model", "MODELS"),
        ("quantizations", "mlc_llm.quantization", "QUANTIZATION"),
    ):
        with contextlib.suppress(Exception):
            found = getattr(importlib.import_module(module), attr)
            names[key] = sorted(found._conv_templates if key == "conv_templates" else found)
    if "quantizations" in names:
        out["names"] = names
    # Fidelity's reference pass needs torch and transformers in this interpreter (worker images install them).
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        with contextlib.suppress(Exception):
            import torch
            import transformers

            out["reference"] = f"transformers {transformers.__version__}, torch {torch.__version__}"


# What the pool can compile beyond the wheel: the tools a compile would find in this environment.
def first_line(*cmd):
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
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
    caps["nvcc"] = next((line for line in said if "release" in line), said[-1] if said else "nvcc (version unknown)")
    archs = first_line("nvcc", "--list-gpu-arch") or []
    found = {a.split("_", 1)[1] for a in archs if a.startswith("compute_")}  # as the matrix says them: 80, 90a
    caps["nvcc_archs"] = sorted(found, key=lambda a: (len(a), a))
rocm = "/opt/rocm/.info/version"
if os.path.isfile(rocm):
    caps["rocm"] = "ROCm " + open(rocm).read().strip()  # noqa: SIM115 (one line, read once)
elif shutil.which("hipcc"):
    caps["rocm"] = (first_line("hipcc", "--version") or ["hipcc"])[0]
# What the pool's TVM can offload to (tvm.support.libinfo(), and the flashinfer package): a default --opt that
# needs what it lacks fails at compile (`RuntimeError: cuBLAS is not enabled.`).
if "mlc_llm_version" in out:

    def on(key):
        return str(info.get(key, "OFF")).upper() not in ("OFF", "0", "FALSE", "NOTFOUND", "")

    caps["offload"] = {
        "cublas": on("USE_CUBLAS"),
        "cutlass": on("USE_CUTLASS"),
        "flashinfer": on("USE_FLASHINFER") or importlib.util.find_spec("flashinfer") is not None,
    }
out["capabilities"] = caps
print(json.dumps(out))
