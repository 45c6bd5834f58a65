"""The Prefect tasks the flows submit: convert, gen_config, reference, compile and check (`builds`), the catalog
update and page (`builds`), publishing (`publish`), and farm mode's dispatch of a build to its pool
(`dispatch`). Thin wrappers over mlc_farm.building, mlc_farm.catalog and mlc_farm.distribute; every task pins
retries=0.

At the top of the checkout as the design card lays out; the package `mlc_farm.tasks` through the link
`mlc_farm/tasks` (see flows/__init__.py).

May import the foundation modules and `building`, `catalog`, `distribute`, `planning`, `records`, `report`,
`store`, `toolchain` (Prefect tasks over the builds, the catalog, publishing and the page; tests/test_structure.py
holds the table).
"""
