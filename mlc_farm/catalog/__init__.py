"""Keeping the catalog: moving it forward only to proven builds (`update`), checking the store holds what it
says (`verify`), signing it again (`renewal`, `resign`), collecting garbage (`gc`), where an entry was
published on the Hub (`published`), and reading back its history and build logs.

May import the foundation modules and `checks`, `huggingface`, `matrix`, `planning`, `records`, `store`, `trust`
(moves entries to a plan's proven, attested builds and signs them; where they are on the Hub;
tests/test_structure.py holds the table).
"""
