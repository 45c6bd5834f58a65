def libinfo() -> dict[str, str]:
    return {"GIT_COMMIT_HASH": "7e57000000000000000000000000000000000000", "USE_LLVM": "ON"}
