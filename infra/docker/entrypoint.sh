#!/usr/bin/env bash
# Worker image entrypoint: print the toolchain identity and what the pool can compile (emcc and
# mlc_wasm_runtime.bc, nvcc, ROCm, ...), and refuse to start without a working mlc_llm, or with a wheel of
# another commit than the image's wasm runtime bitcode (MLC_FARM_EXPECT_MLC_LLM_COMMIT, set by Dockerfile.web).
set -euo pipefail
if [ -n "${MLC_FARM_EXPECT_MLC_LLM_COMMIT:-}" ]; then
  mlc-farm toolchain --expect-commit "${MLC_FARM_EXPECT_MLC_LLM_COMMIT}"
else
  mlc-farm toolchain
fi
exec "$@"
