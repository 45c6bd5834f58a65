"""`python -m mlc_farm.cli`: the `mlc-farm` command."""

from mlc_farm.cli import main

main()
