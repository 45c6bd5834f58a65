"""The run wired to Prefect, the entrypoints of prefect.yaml: the nightly and per-model flows (`nightly`),
the flows of the work pools (`workers`), thin tasks over `building` (`build_tasks`, `publish_task`), farm
mode's dispatch of a build to its pool (`dispatch`) and runs of killed builds (`runs`). Every task and flow
pins retries=0.

May import everything but the CLI; only the CLI imports it.
"""
