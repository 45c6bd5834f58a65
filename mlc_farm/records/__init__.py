"""What the store says was built: the documents (build and failure records, catalog entries) and their reads.

Main types: `schema.BuildRecord`, `schema.FailureRecord`, `schema.CatalogEntry`; `reads` reads them as
untrusted input; `folder` is the layout of an MLC-ready folder; `outcomes` holds what a run's steps hand each
other (how a build, an entry, a publish ended), low so that no package sits high only to lend a type. May import
the foundation modules and `checks`, `store`, `toolchain` (a record holds checks' figures and JIT keys, read from
the store; tests/test_structure.py holds the table).
"""
