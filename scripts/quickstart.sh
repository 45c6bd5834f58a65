#!/usr/bin/env bash
# From a fresh clone: set up, show the plan of matrix.yaml, and build the tiny CPU example on the embedded
# defaults (Prefect's temporary server, the ./artifacts store). Without mlc_llm it installs the CPU wheels
# first; where the MLC wheel index cannot be reached it says so and ends after the plan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
farm=.venv/bin/mlc-farm

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
MSG
    path_hint
    exit 0
  fi
fi
# A failed cell must not hide what was built: list the catalog and the hint, then end with the build's code.
status=0
$farm build --matrix examples/tiny-cpu.yaml || status=$?
$farm ls || true
path_hint
if [ "$status" -ne 0 ]; then
  echo "the build ended with exit code $status: the failed cells and their logs are listed above (mlc-farm log MODEL QUANT)"
fi
exit "$status"
