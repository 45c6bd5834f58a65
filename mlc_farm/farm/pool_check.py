"""`mlc-farm farm check-pool POOL`: does a pool work, before a nightly needs it. The farm's tiny Llama is built
for every matrix device of the pool (its target, archs, opt) through the deployments a nightly uses, checked on
the pool's workers, and the answer read back from the check's own store: what the pool's toolchain can do, what
each library holds, how its check went (fit, run, fidelity, speed). Pure but `report`'s store reads.
"""

from __future__ import annotations

from typing import Any

from mlc_farm.checks.device_code import held
from mlc_farm.errors import BadInput
from mlc_farm.matrix.schema import Matrix
from mlc_farm.records.reads import read_entry
from mlc_farm.report.summary import CellRow
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import toolchain_path
from mlc_farm.toolchain.capabilities import offload_problem
from mlc_farm.toolchain.info import ToolchainInfo

MODEL = "mlc-farm-pool-check"
QUANTIZATION = "q4f16_1"  # the MLC catalog's usual build; the pool's offload for the others is read from its probe
SEED = 0


def check_matrix(matrix: Matrix, pool: str) -> dict[str, Any]:
    """The matrix a pool check builds: the farm's tiny Llama (made on each worker from its seed, no download)
    for each device of `pool` as the matrix gives it, its weights on the matrix's weights pool."""
    devices = [d for d in matrix.devices if d.work_pool == pool]
    if not devices:
        pools = sorted({d.work_pool for d in matrix.devices})
        raise BadInput(f"pool {pool!r}: no device of the matrix builds on it (its devices' pools: {', '.join(pools)})")
    return {
        "quantizations": [QUANTIZATION],
        "devices": [d.model_dump(exclude_defaults=True) for d in devices],
        "models": [{"id": MODEL, "source": {"tiny": SEED}, "conv_template": "LM"}],
        "weights_pool": matrix.weights_pool,
        "convert_device": matrix.convert_device,
    }


def check_store_url(store_url: str) -> str:
    """Where a pool check writes, beside the farm's store and never in it: its catalog, page and records stay
    the farm's own."""
    return f"{store_url.rstrip('/')}-pool-check"


def report(
    store: ArtifactStore, matrix: Matrix, pool: str, ok: bool, message: str, rows: list[CellRow]
) -> tuple[list[str], bool]:
    """The answer, one line per fact, and whether the pool works: every device's library built and checked
    (a check that could not run there, for want of the device, is said, not counted as a failure)."""
    probe = store.read_json(toolchain_path(pool))
    lines = [f"pool {pool}:"]
    if probe is None:
        lines.append("  its toolchain was not probed (no probe-toolchain run finished on it)")
    else:
        tc = ToolchainInfo.model_validate(probe)
        lines += [f"  toolchain: {tc.describe()}", *(f"  {line}" for line in tc.capabilities.lines())]
        caps = tc.capabilities
        for d in (d for d in matrix.devices if d.work_pool == pool):
            for q in matrix.quantizations:
                if why := offload_problem(d, q, pool, caps):
                    lines.append(f"  the matrix's {why}")
    if not rows:
        lines.append(f"  nothing was built: {message}")
        return lines, False
    entry = read_entry(store, MODEL, QUANTIZATION)
    works = ok
    for row in rows:
        if row.status != "ok":
            works = False
            lines.append(
                f"  device {row.device}: FAILED ({row.detail or row.status})" + (f"; log: {row.log}" if row.log else "")
            )
            continue
        ref = entry.libs.get(row.device) if entry else None
        lines.append(f"  device {row.device}: built; {row.validation}")
        if ref and ref.runtime and ref.runtime.needs.cuda_archs:
            lines.append(f"    its library holds {held(ref.runtime.needs.cuda_archs)}")
        if ref:
            lines += [f"    {s.describe()}" for s in ref.validation.run.speeds]
    lines.append(f"pool {pool} {'works' if works else 'does not work'}: {message}")
    return lines, works
