"""Double of tvm.contrib."""

from tvm.contrib import tvmjs  # noqa: F401
