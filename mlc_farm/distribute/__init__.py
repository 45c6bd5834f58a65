"""Giving builds to the people and runtimes that use them: `pull` (a verified MLC-ready directory),
`install` (where mlc_llm's own resolution finds it, with `jit` naming its libraries the way mlc_llm does),
`exports` (a registry of runtime configs: WebLLM, apps, mlc_llm serve), `hub` (one commit per model x
quantization, with its card), `revalidate` (`mlc-farm validate`: a pulled build checked again) and
`output_dir` (writing a directory a user named, all or nothing).

May import the foundation modules and the layers below it: `store` up to `trust`.
"""
