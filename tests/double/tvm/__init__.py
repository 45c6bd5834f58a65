"""Test double of TVM: just the version facts the toolchain probe reads."""

from tvm import support  # noqa: F401

__version__ = "0.22.dev0"
