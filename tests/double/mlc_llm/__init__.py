"""Test double of the real `mlc_llm` package (see __main__.py). Never installed with the product.

MLC_DOUBLE_NO_RUNTIME=1 plays a toolchain without the MLC C++ runtime (no MLCEngine), as in a wheel that
only compiles.
"""

import os

__version__ = os.environ.get("MLC_DOUBLE_VERSION", "0.20.0.dev0")
__commit__ = os.environ.get("MLC_DOUBLE_COMMIT", "d0ub1e0000000000000000000000000000000000")

if not os.environ.get("MLC_DOUBLE_NO_RUNTIME"):
    from mlc_llm._engine import MLCEngine  # noqa: F401
