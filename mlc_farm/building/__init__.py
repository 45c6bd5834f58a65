"""Doing the work without Prefect: the pre-flight (`preflight`), one build start to finish (`build`), one run of
a matrix step by step (`run.MatrixRun`: plan, what to build, dispatch, outcomes, the catalog) and builds'
scratch directories (`workdirs`).

Main types: `preflight.Preflight`, `build.Subject`, `run.MatrixRun`, `run.Engine` (what an orchestrator gives
a run), `run.RunResult`. May import the foundation modules and every layer below it (`store` up to
`report`); the Prefect flows wrap it, and it never imports them.
"""
