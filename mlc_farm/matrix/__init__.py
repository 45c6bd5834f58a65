"""matrix.yaml: its schema (`schema.Matrix`, `DeviceSpec`, `ModelSpec`, `Cell`), loading it as hostile input
with every problem named (`load`), and its cells (`cells`).

Never imports numpy or anything that runs: the CLI loads it to refuse bad input in milliseconds. May import
the foundation modules (`errors`, `names`, `devices`) and `checks.fidelity_rules` (a matrix's thresholds).
"""
