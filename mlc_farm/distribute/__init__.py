"""Giving builds to the people and runtimes that use them: `pull` (a verified MLC-ready directory),
`install` (where mlc_llm's own resolution finds it, its libraries named by toolchain/jit.py the way mlc_llm
does), `exports` (a registry of runtime configs: WebLLM, apps, mlc_llm serve), `hub` (one commit per model x
quantization, with its card) and `revalidate` (`mlc-farm validate`: a pulled build checked again). Each writes a
user's directory through mlc_farm/output_dir.py (all or nothing).

May import the foundation modules and `catalog`, `checks`, `huggingface`, `matrix`, `records`, `store`,
`toolchain`, `trust` (gives out the catalog's trusted entries, checked again where they land;
tests/test_structure.py holds the table).
"""
