#!/usr/bin/env bash
# Worker image entrypoint: print the toolchain identity and refuse to start without a working mlc_llm.
set -euo pipefail
mlc-farm toolchain
exec "$@"
