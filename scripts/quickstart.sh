#!/usr/bin/env bash
# From a fresh clone: set up, show the plan of matrix.yaml, and build the tiny CPU example on the embedded
# defaults (Prefect's temporary server, the ./artifacts store) when the real mlc_llm is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
farm=.venv/bin/mlc-farm

$farm plan --matrix matrix.yaml
[ -d examples/tiny-models/tiny-llama-a ] || $farm tiny-model examples/tiny-models/tiny-llama-a --seed 1
[ -d examples/tiny-models/tiny-llama-b ] || $farm tiny-model examples/tiny-models/tiny-llama-b --seed 2
$farm plan --matrix examples/tiny-cpu.yaml

if .venv/bin/python -c 'import mlc_llm' 2>/dev/null || [ -n "${MLC_FARM_MLC_LLM:-}" ]; then
  $farm build --matrix examples/tiny-cpu.yaml
  $farm ls
else
  cat <<'MSG'

The plan above is what the farm would build. To build it here, install the real MLC wheels
(the PyPI packages named mlc-llm-nightly-* are empty placeholders):

  bash scripts/install-mlc.sh cpu        # or cu128 / rocm62 on a GPU machine
  bash scripts/quickstart.sh

MSG
fi
