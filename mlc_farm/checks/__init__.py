"""Is a library fit to ship: it fits its weights, runs where its device is, agrees with its source, and how
fast and how much memory it takes.

Holds the fit check, the device code a library holds (read from its bytes) and what a runtime needs for it,
the run in the toolchain (`validate`), fidelity (its rules without numpy, its records and gate, its numpy
metrics) and speed and memory figures. May import the foundation modules, `matrix`, `toolchain` and `store`.
"""
