"""Farm mode's ground: the work pools of a matrix and their limits (`pools`, `farm init`, with each pool
type's base job template in `templates/`), the local stack without Docker (`stack`: PostgreSQL, a Prefect
server, SeaweedFS, workers) and whether a pool works before a nightly needs it (`pool_check`).

May import the foundation modules and `checks`, `matrix`, `records`, `report`, `store`, `toolchain`, `trust` (the
pools of a matrix's devices and the report of a pool check; tests/test_structure.py holds the table).
"""
