"""The one pre-flight of a run, and of `plan`: the errors a run can have before it spends anything, found once.

`mlc-farm build` makes it before Prefect starts (bad input exits 2 in milliseconds) and hands it to the flow
whole, as a flow parameter; a flow a deployment starts makes its own. `plan` makes the same one without
writing to the store and without refusing what only a build must refuse, and shows what it found.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, PrivateAttr

from mlc_farm.errors import BadInput, NamesRejected, PublishError, ToolchainUnavailable
from mlc_farm.matrix.cells import select_cells
from mlc_farm.matrix.load import load_matrix, toolchain_problems
from mlc_farm.matrix.repos import repo_for
from mlc_farm.matrix.schema import BUILTIN_NAMES, Accepted, Cell, LoadedMatrix, Matrix
from mlc_farm.records.outcomes import PublishTarget
from mlc_farm.store import ArtifactStore, open_store
from mlc_farm.toolchain import capabilities
from mlc_farm.toolchain.info import ToolchainInfo, names_snapshot

Probe = Callable[[ArtifactStore, list[str]], ToolchainInfo]  # (store, pools: the weights pool first) -> toolchain
REFUSED = (PublishError, ToolchainUnavailable, NamesRejected)  # pre-flight errors that end a run Failed


class Preflight(BaseModel):
    """Everything checked before anything runs: the matrix and its cells, where each unit is published, the
    store, the toolchain and the names it accepts. Plain data, so a flow can be handed it."""

    model_config = ConfigDict(frozen=True)

    loaded: LoadedMatrix
    cells: list[Cell]
    targets: list[PublishTarget]
    store_url: str
    pools: list[str]  # the weights pool (weights, configs, references: the run's toolchain) first
    toolchain: ToolchainInfo
    accepted: Accepted  # the names the matrix was checked against, and where they come from
    unbuildable: list[str] = []  # devices whose pool cannot build their target (`plan` shows them; a build refuses)
    _store: ArtifactStore | None = PrivateAttr(default=None)

    @property
    def matrix(self) -> Matrix:
        return self.loaded.matrix

    def store(self) -> ArtifactStore:
        """The store it checked (opened again by URL where the pre-flight was made in another process)."""
        if self._store is None:
            self._store = open_store(self.store_url)
        return self._store


def preflight(
    matrix_path: str,
    models: list[str] | None,
    quantizations: list[str] | None,
    devices: list[str] | None,
    store_url: str | None,
    probe: Probe,
    *,
    building: bool = True,
) -> Preflight:
    """Load and select the matrix, open the store, probe the toolchain and check the matrix's names against
    it. `building`: also check that the store takes writes, and refuse an unusable toolchain and devices
    their pool cannot build (`plan` shows those instead, and reads names a toolchain kept in the store when
    none is installed here)."""
    loaded = load_matrix(matrix_path)
    matrix = loaded.matrix
    cells = select_cells(matrix, loaded.file, models, quantizations, devices)
    units = dict.fromkeys((c.model, c.quantization) for c in cells)
    targets = [PublishTarget(m, q, *target) for m, q in units if (target := repo_for(matrix, m, q))]
    store = open_store(store_url)
    if building:
        store.check_writable()  # before anything is spent, not after the first build
    pools = pools_of(matrix, cells)
    toolchain = probe(store, pools)
    if building and not toolchain.known:
        raise ToolchainUnavailable(f"toolchain unavailable: {toolchain.error}")
    accepted = toolchain.names or (None if toolchain.known else names_snapshot(store)) or BUILTIN_NAMES
    if problems := toolchain_problems(matrix, accepted):
        raise NamesRejected(loaded.file, [*problems, f"(names checked against {accepted.source})"])
    cannot = unbuildable(matrix, cells, toolchain) if toolchain.known else []
    if building and cannot:  # it would fail at compile time, after its conversion spent its GPU time
        raise BadInput("\n".join(cannot))
    pre = Preflight(
        loaded=loaded,
        cells=cells,
        targets=targets,
        store_url=store.url,
        pools=pools,
        toolchain=toolchain,
        accepted=accepted,
        unbuildable=cannot,
    )
    pre._store = store
    return pre


def unbuildable(matrix: Matrix, cells: list[Cell], toolchain: ToolchainInfo) -> list[str]:
    """The devices of the cells whose pool cannot build their target (no emcc for webgpu, cuda_archs beyond
    the pool's nvcc, an opt that needs cuBLAS where TVM has none...), a line each."""
    devices = [matrix.device(name) for name in sorted({c.device for c in cells})]
    found = capabilities.problems(devices, toolchain.can_build)
    for device, quantization in sorted({(c.device, c.quantization) for c in cells}):
        spec = matrix.device(device)
        if why := capabilities.offload_problem(spec, quantization, spec.work_pool, toolchain.can_build(spec.work_pool)):
            found.append(why)
    return found


def pools_of(matrix: Matrix, cells: list[Cell]) -> list[str]:
    """The pools the cells build on: the weights pool (weights, configs, references: the run's toolchain) first."""
    return [matrix.weights_pool, *sorted({matrix.device(c.device).work_pool for c in cells} - {matrix.weights_pool})]
