#!/usr/bin/env bash
# Install the real mlc_llm + TVM wheels from the MLC wheel index into .venv: cpu, cu128 or rocm62.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-cpu}"
case "$flavour" in cpu|cu128|cu130|rocm62|rocm63) ;; *) echo "usage: $0 cpu|cu128|cu130|rocm62|rocm63" >&2; exit 2;; esac
bash scripts/setup.sh
.venv/bin/python -m pip install --pre -f https://mlc.ai/wheels \
  "mlc-llm-nightly-${flavour}${MLC_NIGHTLY_VERSION:+==$MLC_NIGHTLY_VERSION}" \
  "mlc-ai-nightly-${flavour}${MLC_AI_NIGHTLY_VERSION:+==$MLC_AI_NIGHTLY_VERSION}"
.venv/bin/python -c 'import mlc_llm, tvm; print("mlc_llm", mlc_llm.__version__, "tvm", tvm.__version__)'
