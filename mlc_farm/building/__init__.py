"""Doing the work without Prefect: one build start to finish (`build`), one run of a matrix step by step
(`run.MatrixRun`: pre-flight, plan, what to build, dispatch, outcomes, the catalog), what each build is doing
right now (`activity`) and builds' scratch directories (`workdirs`).

Main types: `build.Subject`, `run.MatrixRun`, `run.Engine` (what an orchestrator gives a run), `run.RunResult`.
May import every package below it (`planning`, `toolchain`, `checks`, `records`, `catalog`, `trust`,
`store`); the Prefect flows wrap it, and it never imports them.
"""
