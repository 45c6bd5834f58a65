#!/usr/bin/env bash
# From a fresh clone: set up, show the plan of matrix.yaml, and build the tiny CPU example on the embedded
# defaults (Prefect's temporary server, the ./artifacts store). Without mlc_llm it installs the CPU wheels
# first; where the MLC wheel index cannot be reached it says so and ends after the plan.
#   --stand-in: no wheels at all; build with the repository's toolchain double (tests/double) instead, into
#   ./artifacts-stand-in: a stand-in that computes a real tiny Llama, not MLC.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
farm=.venv/bin/mlc-farm

# The settings file a new shell goes on with (mlc-farm reads ./mlc-farm.env, or $MLC_FARM_SETTINGS_FILE; the
# environment wins over it): NAME VALUE pairs, each value written as python-dotenv reads it back.
write_settings() {
  local file="${MLC_FARM_SETTINGS_FILE:-mlc-farm.env}"
  .venv/bin/python - "$file" "$@" <<'PY'
import sys
file, pairs = sys.argv[1], sys.argv[2:]
lines = ["# Written by scripts/quickstart.sh: what `mlc-farm` reads when run from this directory. The environment",
         "# wins over it; edit it, or delete it to go back to the defaults."]
for name, value in zip(pairs[::2], pairs[1::2]):
    quoted = "'" + value + "'" if "'" not in value else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    lines.append(f"{name}={quoted}")
with open(file, "w") as f:
    f.write("\n".join(lines) + "\n")
PY
  echo "settings for the next commands: $file"
}

next_steps() {
  cat <<MSG

Next, in a new shell from this directory (source .venv/bin/activate; $1):
  mlc-farm ls                                                   # the catalog just built
  mlc-farm pull tiny-llama-a q4f16_1 -o tiny-llama-a-q4f16_1    # an MLC-ready folder, every file checked
  mlc-farm verify-signature tiny-llama-a-q4f16_1                # ... against the farm's signature, by anyone
The rest of the tour is in README.md ("A five-minute tour").
MSG
}
if [ "${1:-}" = "--stand-in" ]; then
  cat <<'MSG'
A STAND-IN, not MLC: the toolchain double of the tests (tests/double: a mlc_llm and TVM that compute the tiny
Llama with numpy, write libraries only it can load, and follow the real tool's command line and outputs) builds
examples/tiny-cpu.yaml into ./artifacts-stand-in. Nothing it makes runs in the real mlc_llm.
MSG
  # The double is this venv's Python with tests/double on its path: the toolchain command carries it, so every
  # later command (in any shell) uses the same stand-in without a variable of its own.
  write_settings MLC_FARM_STORE "${MLC_FARM_STORE:-$PWD/artifacts-stand-in}" \
    MLC_FARM_MLC_LLM "PYTHONPATH=$(printf %q "$PWD/tests/double") $(printf %q "$PWD/.venv/bin/python") -m mlc_llm"
  unset MLC_FARM_STORE MLC_FARM_MLC_LLM
  [ -d examples/tiny-models/tiny-llama-a ] || $farm tiny-model examples/tiny-models/tiny-llama-a --seed 1
  [ -d examples/tiny-models/tiny-llama-b ] || $farm tiny-model examples/tiny-models/tiny-llama-b --seed 2
  $farm build --matrix examples/tiny-cpu.yaml
  $farm ls
  next_steps "the stand-in and its store are in the settings file"
  exit 0
fi

# matrix.yaml is a farm's: its GPU devices are built on their pools' workers, which have the tools this
# machine may lack (nvcc, ROCm); the plan says which it cannot build here, and the quick start goes on.
$farm plan --matrix matrix.yaml || echo "(those devices are built by the workers of their pools; this machine builds examples/tiny-cpu.yaml)"
[ -d examples/tiny-models/tiny-llama-a ] || $farm tiny-model examples/tiny-models/tiny-llama-a --seed 1
[ -d examples/tiny-models/tiny-llama-b ] || $farm tiny-model examples/tiny-models/tiny-llama-b --seed 2
$farm plan --matrix examples/tiny-cpu.yaml

path_hint() { echo; echo "mlc-farm is in .venv/bin: source .venv/bin/activate (or export PATH=\"\$PWD/.venv/bin:\$PATH\")"; }
has_mlc() { [ -n "${MLC_FARM_MLC_LLM:-}" ] || .venv/bin/python -c 'import mlc_llm' 2>/dev/null; }
if ! has_mlc; then
  echo "mlc_llm is not installed: installing the CPU wheels from the MLC wheel index (scripts/install-mlc.sh cpu)"
  if ! bash scripts/install-mlc.sh cpu; then
    cat <<'MSG'

The plan above is what the farm would build; the quick start ends here, without the real mlc_llm.
On a machine that reaches the MLC wheel index: bash scripts/install-mlc.sh cpu && bash scripts/quickstart.sh
To see a build now with the repository's stand-in toolchain (not MLC): bash scripts/quickstart.sh --stand-in
MSG
    path_hint
    exit 0
  fi
fi
# A failed cell must not hide what was built: list the catalog and the hint, then end with the build's code.
write_settings MLC_FARM_STORE "${MLC_FARM_STORE:-$PWD/artifacts}" ${MLC_FARM_MLC_LLM:+MLC_FARM_MLC_LLM "$MLC_FARM_MLC_LLM"}
status=0
$farm build --matrix examples/tiny-cpu.yaml || status=$?
$farm ls || true
path_hint
[ "$status" -ne 0 ] || next_steps "the store is in the settings file"
if [ "$status" -ne 0 ]; then
  echo "the build ended with exit code $status: the failed cells and their logs are listed above (mlc-farm log MODEL QUANT)"
fi
exit "$status"
