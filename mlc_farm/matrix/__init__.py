"""matrix.yaml: its schema (`schema.Matrix`, `DeviceSpec`, `ModelSpec`, `Cell`), loading it as hostile input
with every problem named (`load`), its cells (`cells`), and the fidelity rules a matrix may set
(`fidelity_rules`, with the evaluation text in `eval/`).

Never imports numpy or anything that runs: the CLI loads it to refuse bad input in milliseconds. May import the
foundation modules only (the user's matrix and its rules, on their own; tests/test_structure.py holds the table).
"""
