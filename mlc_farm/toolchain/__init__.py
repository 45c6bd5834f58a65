"""The `mlc_llm` adapter, the one place the toolchain is called: what a toolchain is (`info.ToolchainInfo`,
the identity in every key, and `capabilities`: what a pool can compile), asking it (`probe`), the exact
command lines of shared/mlc-reference (`commands`), calling it (`invoke`: a step with its log, a script of
`scripts/` in its interpreter) and supervising its processes (`process`).

`scripts/` holds every script run in the toolchain's own interpreter (the probe, a library's run, the
reference's logits, a JIT key): they import only what the reference documents and are never imported by
mlc_farm. May import the foundation modules and `matrix`, `store` (calls mlc_llm for a matrix's devices; a probe's
answer is kept in the store; tests/test_structure.py holds the table).
"""
