"""Helpers shared by the tests: run the CLI as a user would, read what the double recorded."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOUBLE = Path(__file__).resolve().parent / "double"
# Facts produced by the real tool (a copy of shared/mlc-reference): the tests need nothing outside the repo.
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "mlc-reference"
# A stand-in mlc-llm source tree holding web/dist/wasm/mlc_wasm_runtime.bc (MLC_LLM_SOURCE_DIR of the tests).
MLC_LLM_SOURCE = Path(__file__).resolve().parent / "fixtures" / "mlc-llm-source"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `mlc-farm` in this process (typer's CliRunner): what a person sees, without a new interpreter and
    Prefect import per call. For kills, signals and anything that needs a process of its own, use `cli`."""
    from typer.testing import CliRunner

    from mlc_farm.cli import app

    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["mlc-farm", *args], result.exit_code, result.stdout, result.stderr)


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run `mlc-farm` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "mlc_farm.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=ROOT,
    )


# The work pools of prefect.yaml's deployments: a test that deploys to them on its worker's Prefect server starts
# with them deleted (`without_pools`), so that no earlier test's workers take its flow runs.
POOLS = ["mlc-cpu", "mlc-cuda", "mlc-rocm"]
# The tests that spend minutes waiting on Prefect (heartbeats, a worker's polls, each flow run's start) with little
# CPU: the pool tests and the farm stack's. One xdist group runs them on one worker, one after another: on 2 cores
# the other two workers then keep both cores busy, where two of these waiting at once would leave one idle.
WAITS_ON_PREFECT = pytest.mark.xdist_group("waits-on-prefect")


def without_pools() -> None:
    """Delete POOLS on the Prefect server (their workers with them): a test that makes and deploys to them
    starts from none, not from workers an earlier test stopped, which Prefect counts online for minutes."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        for pool in POOLS:
            with contextlib.suppress(ObjectNotFound):
                client.delete_work_pool(pool)


def prefect(*args: str, env: dict[str, Any], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """The `prefect` command line, from the repository (its prefect.yaml)."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "--no-prompt", *args],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=ROOT, timeout=timeout,
    )  # fmt: skip


def unhashed(path: str) -> str:
    """A library path without the content hash its name carries (`libs/m-q-cpu-0123456789ab.so` ->
    `libs/m-q-cpu.so`); other paths as they are."""
    return re.sub(r"-[0-9a-f]{12}(\.[a-z]+)$", r"\1", path)


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie has already died)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


def toolchain_calls(log: Path) -> list[dict[str, Any]]:
    """The invocations the double recorded (MLC_DOUBLE_LOG)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def s3_client() -> Any:
    """A client from a fresh session: boto3's default session would keep the first test's credentials."""
    import boto3

    return boto3.session.Session().client("s3")


UNPUBLISHED_CELL = """
quantizations: [q4f16_1]
devices: [{name: cpu, family: cpu, target: llvm}]
models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]
"""
ONE_CELL = UNPUBLISHED_CELL + "publish: {org: farm-org}\n"


def built_store(tiny_models: Path, tmp_path: Path, text: str = ONE_CELL) -> tuple[Path, Path]:
    """(the store, the matrix) of one tiny cell built (and published, when the matrix says) through the CLI."""
    matrix = tiny_models / f"one-cell-{tmp_path.name}.yaml"
    matrix.write_text(text)
    store = tmp_path / "built"
    done = cli("build", "--matrix", str(matrix), "--store", str(store))
    assert done.returncode == 0, done.stdout + done.stderr
    return store, matrix


def farm_edit(store: Path, model: str, quantization: str, change: Any = None, signed_at: Any = None) -> None:
    """Change a catalog entry as the farm itself would (a device leaving the matrix, ...) and sign it with the
    farm's key, as the nightly that made the change does: an edit by anyone else is refused by every reader."""
    from mlc_farm.records.reads import read_entry
    from mlc_farm.records.schema import CatalogEntry
    from mlc_farm.store.layout import catalog_path
    from mlc_farm.store.local import LocalStore
    from mlc_farm.trust import attestations, keys
    from mlc_farm.trust.entry_signatures import sign_entry

    st, trusted = LocalStore(store), keys.trusted_keys()
    entry = read_entry(st, model, quantization)
    assert entry is not None
    doc = entry.model_dump(mode="json")
    if change:
        change(doc)
    signed = sign_entry(st, CatalogEntry.model_validate(doc), keys.signing_key(),
                        lambda k: attestations.attested(st, k, trusted), signed_at=signed_at)  # fmt: skip
    st.write_json(catalog_path(model, quantization), signed.model_dump(mode="json"))
