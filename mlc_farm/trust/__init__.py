"""Why a user can trust what the farm ships: signatures in the OpenSSF model-signing format (`signatures`),
the farm's keys (`keys`), its signatures of catalog entries and published folders in the store
(`entry_signatures`), and the in-toto / SLSA provenance of a build (`provenance`).

May import the foundation modules and the layers below it: `store`, ..., `records`, `planning` (keys).
"""
