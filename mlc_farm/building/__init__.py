"""Doing the work without Prefect: the pre-flight (`preflight`), one build start to finish (`build`), one run of
a matrix step by step (`run.MatrixRun`: plan, what to build, dispatch, outcomes, the catalog) and builds'
scratch directories (`workdirs`).

Main types: `preflight.Preflight`, `build.Subject`, `run.MatrixRun`, `run.Engine` (what an orchestrator gives
a run), `run.RunResult`. May import the foundation modules and `catalog`, `checks`, `matrix`, `planning`,
`records`, `report`, `store`, `toolchain`, `trust` (runs a plan's builds and hands the catalog and the report what
they found; tests/test_structure.py holds the table).
"""
