"""What the store says was built: the documents (build and failure records, catalog entries) and their reads.

Main types: `schema.BuildRecord`, `schema.FailureRecord`, `schema.CatalogEntry`; `reads` reads them as
untrusted input. May import the foundation modules, `store`, `matrix`, `toolchain` and `checks` (the figures
and results a record holds).
"""
