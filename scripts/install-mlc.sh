#!/usr/bin/env bash
# Install the real mlc_llm + TVM wheels from the MLC wheel index into .venv: cpu, cu128, cu130, rocm62, rocm63.
# The wheels come from the index only: PyPI's mlc-llm-nightly-* / mlc-ai-nightly-* are empty placeholders, so
# an index that cannot be reached, or has no wheel for this Python, is an error here, never a fallback to them.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-cpu}"
index="${MLC_WHEEL_INDEX:-https://mlc.ai/wheels}"
case "$flavour" in cpu|cu128|cu130|rocm62|rocm63) ;; *) echo "usage: $0 cpu|cu128|cu130|rocm62|rocm63" >&2; exit 2;; esac

if ! why="$(python3 - "$index" 2>&1 <<'PY'
import os, sys, urllib.request
where = sys.argv[1]
try:
    if not os.path.isdir(where):
        urllib.request.urlopen(where, timeout=20).close()
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")
PY
)"; then
  cat >&2 <<MSG
error: the MLC wheel index $index cannot be reached from this machine ($why), so the real mlc_llm cannot be
installed here (the PyPI packages of the same name are empty placeholders and are never installed instead).
Install on a machine that reaches it, use a worker image (Dockerfile.cuda / Dockerfile.rocm), or point
MLC_WHEEL_INDEX at a mirror or a directory of the wheels.
MSG
  exit 1
fi

bash scripts/setup.sh
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
llm="mlc-llm-nightly-${flavour}${MLC_NIGHTLY_VERSION:+==$MLC_NIGHTLY_VERSION}"
ai="mlc-ai-nightly-${flavour}${MLC_AI_NIGHTLY_VERSION:+==$MLC_AI_NIGHTLY_VERSION}"
if ! .venv/bin/python -m pip download --quiet --pre --no-index --no-deps --find-links "$index" --dest "$wheels" "$llm" "$ai"; then
  echo "error: $index has no $llm / $ai wheel for $(.venv/bin/python -V) on $(uname -m); nothing was installed" >&2
  exit 1
fi
.venv/bin/python -m pip install --quiet --pre "$wheels"/*.whl
if ! .venv/bin/python -c 'import mlc_llm, tvm; print("mlc_llm", mlc_llm.__version__, "tvm", tvm.__version__)'; then
  echo "error: the wheels from $index installed, but mlc_llm does not import (see above)" >&2
  exit 1
fi
