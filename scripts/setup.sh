#!/usr/bin/env bash
# Create .venv with mlc-farm and its test tools (idempotent). Sourced by quickstart.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

pick_python() {
  for candidate in "${PYTHON:-}" python3.11 python3.12 python3.10 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] <= (3, 12)))'; then
      echo "$candidate"; return 0
    fi
  done
  echo "mlc-farm needs Python 3.10, 3.11 or 3.12 (set PYTHON=/path/to/python)" >&2
  return 1
}

if [ ! -x .venv/bin/python ]; then
  "$(pick_python)" -m venv .venv
fi
stamp=.venv/.mlc-farm-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip uv
  # uv installs the ~1 GB of packages in ~20 s where pip took ~40 (it fetches and unpacks in parallel, and links
  # from its cache on a second install). It writes their bytecode as pip does: where PYTHONDONTWRITEBYTECODE is
  # set, every process would otherwise compile what it imports of Prefect, each time. uv reads no pip
  # configuration: where it fails (a package index reached only through pip.conf), pip installs instead.
  if ! .venv/bin/uv pip install --python .venv/bin/python --quiet --compile-bytecode -e '.[dev]'; then
    echo "uv could not install the packages (above): pip installs them instead" >&2
    .venv/bin/python -m pip install --quiet -e '.[dev]'
  fi
  touch "$stamp"
fi
