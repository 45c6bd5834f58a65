"""The Prefect flows, prefect.yaml's entrypoints: the nightly, build-model and check-pool (`nightly`), the flows
of the work pools (`workers`), the engine that gives a run Prefect's tasks and artifacts (`engine`) and runs of
killed builds (`runs`). Thin over the core (mlc_farm/building/run.py runs a matrix without Prefect); every flow
pins retries=0.

This directory sits at the top of the checkout, as the design card lays out, and is the package
`mlc_farm.flows` through the link `mlc_farm/flows`: the wheel carries it, so an installed `mlc-farm build` runs
without a checkout, and workers load prefect.yaml's `flows/...` entrypoints from theirs.

May import the foundation modules and `building`, `farm`, `matrix`, `planning`, `records`, `report`, `store`,
`tasks`, `toolchain`, `trust` (Prefect flows: a run given tasks, pools and artifacts; tests/test_structure.py holds
the table).
"""
