"""Test double of the real `mlc_llm` package (see __main__.py). Never installed with the product.

MLC_DOUBLE_NO_RUNTIME=1 plays a toolchain without the MLC C++ runtime (no MLCEngine), as in a wheel that
only compiles.
"""

import os

__version__ = os.environ.get("MLC_DOUBLE_VERSION", "0.20.0.dev0")
__commit__ = os.environ.get("MLC_DOUBLE_COMMIT", "d0ub1e0000000000000000000000000000000000")


def __getattr__(name: str) -> object:
    """`mlc_llm.MLCEngine`, loaded when asked for (it pulls in the double's TVM and NumPy, which the steps that
    only write configs or compile never need: a tenth of a second per toolchain process)."""
    if name == "MLCEngine" and not os.environ.get("MLC_DOUBLE_NO_RUNTIME"):
        from mlc_llm._engine import MLCEngine

        return MLCEngine
    raise AttributeError(f"module 'mlc_llm' has no attribute {name!r}")
