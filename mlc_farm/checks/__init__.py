"""Is a library fit to ship: it fits its weights, runs where its device is, agrees with its source, and how
fast and how much memory it takes.

Holds the fit check, the device code a library holds (read from its bytes) and what a runtime needs for it,
the run in the toolchain (`validate`) and its results (`results`), fidelity (its records and gate, its
numpy metrics) and speed and memory figures. May import the foundation modules and `matrix`, `toolchain` (a
library's checks run in the toolchain against the matrix's rules; tests/test_structure.py holds the table).
"""
