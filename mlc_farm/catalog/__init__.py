"""Keeping the catalog: moving it forward only to proven builds (`update`), checking the store holds what it
says (`verify`), collecting garbage (`gc`), and reading back its history and build logs.

May import the foundation modules and the layers below it: `store` up to `distribute`; never a build or a flow.
"""
