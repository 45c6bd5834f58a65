"""What a matrix needs built, and in what order (pure but for the store and toolchain reads it is handed).

Holds the plan (`plan.Plan` and its build models, each with its label and pool), the content keys, model
sources and the checks made of them before anything runs, conversion twins and fingerprints, expected
durations, the scheduling rule and why a build is still to do. May import the foundation modules and `checks`,
`huggingface`, `matrix`, `records`, `store`, `toolchain` (keys from the matrix, the toolchain, the checks and the
Hub's commits; built is what has a record; tests/test_structure.py holds the table).
"""
