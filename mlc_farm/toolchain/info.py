"""What a toolchain is: the identity that goes into every build key, what its registries accept, what each
pool can compile; one run's toolchain from every pool's probe, and the probe's snapshot kept in the store.
"""

from __future__ import annotations

import contextlib

from pydantic import BaseModel, ConfigDict

from mlc_farm.errors import StoreError
from mlc_farm.matrix.schema import Accepted
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import TOOLCHAINS
from mlc_farm.toolchain.capabilities import Capabilities


class ToolchainInfo(BaseModel):
    """The toolchain identity that goes into every build key: a new MLC nightly changes the keys."""

    model_config = ConfigDict(frozen=True)

    mlc_llm_version: str = "unknown"
    mlc_llm_commit: str = "unknown"
    mlc_llm_dist: str = "unknown"
    tvm_version: str = "unknown"
    tvm_commit: str = "unknown"
    error: str | None = None
    # What the toolchain's registries accept (conv templates, model types, quantizations): not part of keys.
    names: Accepted | None = None
    # torch and transformers, when importable beside it: fidelity's reference pass can run (not part of keys).
    reference: str | None = None
    # The pools whose toolchain is another one (its identity): their libraries and checks are keyed by it.
    pools: dict[str, dict[str, str]] = {}
    # What this pool can compile (emcc, nvcc, ...), and every pool's after `of_pools` (not part of keys).
    capabilities: Capabilities = Capabilities()
    pool_capabilities: dict[str, Capabilities] = {}

    def can_build(self, pool: str) -> Capabilities:
        return self.pool_capabilities.get(pool, self.capabilities)

    @property
    def known(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if not self.known:
            return f"unknown ({self.error})"
        return (
            f"mlc_llm {self.mlc_llm_version} ({self.mlc_llm_commit[:12]}), "
            f"tvm {self.tvm_version} ({self.tvm_commit[:12]})"
        )


SNAPSHOT_POOL = "embedded"  # where an embedded build keeps its probe in the store (farm pools use their names)


def names_snapshot(store: ArtifactStore) -> Accepted | None:
    """The names a toolchain accepted, from the newest probe kept in the store (every build keeps its probe
    under `toolchains/`): where no toolchain is installed (a laptop), the matrix is still checked against the
    registries of the one that builds it, and says so."""
    kept = sorted(store.list_with_info(TOOLCHAINS), key=lambda found: found[2], reverse=True)
    for name, _size, when in kept:
        with contextlib.suppress(ValueError, StoreError):
            info = ToolchainInfo.model_validate(store.read_json(name) or {"error": "empty"})
            if info.known and info.names is not None:
                return info.names.model_copy(
                    update={
                        "source": f"a snapshot of the registries of mlc_llm {info.mlc_llm_version}, kept by the "
                        f"probe in {store.url}/{name} on {when:%Y-%m-%d} (no toolchain here)"
                    }
                )
    return None


IDENTITY = ("mlc_llm_version", "mlc_llm_commit", "mlc_llm_dist", "tvm_version", "tvm_commit")


def identity(tc: ToolchainInfo) -> dict[str, str]:
    """What a toolchain is: its versions and commits (not what it accepts or has beside it)."""
    return {f: getattr(tc, f) for f in IDENTITY}


def of_pools(found: dict[str, ToolchainInfo], run_pool: str) -> ToolchainInfo:
    """One run's toolchain from every pool's probe: the run pool's (weights, configs, references), with the
    pools whose toolchain differs listed in `pools`, so each device's libraries are built and keyed by its own.
    Fidelity's reference pass is planned only where every pool has torch and transformers (images from one
    build agree; a mixed farm falls back to its highest-precision builds)."""
    for pool, tc in sorted(found.items()):
        if not tc.known:
            return ToolchainInfo(error=f"pool {pool}: {tc.error}")
    run = found[run_pool]
    others = {pool: identity(tc) for pool, tc in sorted(found.items()) if identity(tc) != identity(run)}
    tools = {tc.reference for tc in found.values()}
    caps = {pool: tc.capabilities for pool, tc in sorted(found.items())}
    return run.model_copy(
        update={"pools": others, "reference": tools.pop() if len(tools) == 1 else None, "pool_capabilities": caps}
    )


def of_pool(tc: ToolchainInfo, pool: str) -> ToolchainInfo:
    """The toolchain a pool builds with: its own when it differs from the run's."""
    return ToolchainInfo(**tc.pools[pool]) if pool in tc.pools else tc
