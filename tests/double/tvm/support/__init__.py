import os

# The libraries this TVM was built with; MLC_DOUBLE_NO_OFFLOAD=cublas,cutlass,flashinfer builds it without them.
OFFLOAD = {"cublas": "USE_CUBLAS", "cutlass": "USE_CUTLASS", "flashinfer": "USE_FLASHINFER"}


def without() -> set[str]:
    return {n.strip() for n in os.environ.get("MLC_DOUBLE_NO_OFFLOAD", "").split(",") if n.strip()}


def libinfo() -> dict[str, str]:
    info = {"GIT_COMMIT_HASH": "7e57000000000000000000000000000000000000", "USE_LLVM": "ON"}
    return info | {key: "OFF" if name in without() else "ON" for name, key in OFFLOAD.items()}
