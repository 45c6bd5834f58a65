"""Test double of the real `mlc_llm` package (see __main__.py). Never installed with the product."""

import os

__version__ = os.environ.get("MLC_DOUBLE_VERSION", "0.20.0.dev0")
__commit__ = os.environ.get("MLC_DOUBLE_COMMIT", "d0ub1e0000000000000000000000000000000000")
