"""Why a user can trust what the farm ships: signatures in the OpenSSF model-signing format (`signatures`),
the farm's signatures of catalog entries and published folders in the store (`entry_signatures`), and the
in-toto / SLSA provenance of a build (`provenance`).

May import the foundation modules (`credentials` holds the keys), `records`, `planning.keys` and `store`.
"""
