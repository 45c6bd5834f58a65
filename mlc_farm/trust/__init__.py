"""Why a user can trust what the farm ships: signatures in the OpenSSF model-signing format (`signatures`),
the farm's keys (`keys`), its signatures of catalog entries and published folders in the store
(`entry_signatures`), and the in-toto / SLSA provenance of a build (`provenance`).

May import the foundation modules and `records`, `store` (signs and verifies records and entries in the store;
tests/test_structure.py holds the table).
"""
