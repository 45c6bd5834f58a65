"""`mlc-farm farm init / up / down`: work pools, limits, and the local stack."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from mlc_farm.cli._app import farm_app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import MatrixOpt, PoolType
from mlc_farm.cli._output import out, quiet_prefect
from mlc_farm.errors import BadInput, NoWorker
from mlc_farm.matrix.load import load_matrix
from mlc_farm.matrix.schema import LoadedMatrix
from mlc_farm.settings import remove_settings_block, set_settings_block

_StoreCredentials = Annotated[
    bool, typer.Option("--store-credentials", help="Save the AWS keys and HF_TOKEN of this environment in blocks.")
]
_SigningKey = Annotated[
    bool,
    typer.Option(
        "--signing-key", help="Make the farm's signing key in a Secret block (once) and print its public key."
    ),
]
_Notify = Annotated[
    str | None,
    typer.Option("--notify", help="A notification block (TYPE/NAME, e.g. slack-webhook/ops) that hears of failed, "
                 "kept, regressed or missed nightlies."),
]  # fmt: skip
_MissedAfter = Annotated[
    str, typer.Option("--missed-after", help="A nightly that has not completed for this long notifies (e.g. 26h).")
]
_CheckPools = Annotated[
    bool,
    typer.Option("--check-pools", help="Then run `farm check-pool` for each pool of the matrix's devices (once the "
                 "deployments exist and workers poll the pools)."),
]  # fmt: skip


@command(farm_app, "init")
def farm_init(
    matrix: MatrixOpt = Path("matrix.yaml"),
    pool_type: Annotated[PoolType, typer.Option("--type", help="The work pools' type.")] = PoolType.process,
    gpus: Annotated[int, typer.Option(help="Compiles at once per pool (one per GPU).")] = 1,
    pool_limit: Annotated[int | None, typer.Option(help="Flow runs at once per pool.")] = None,
    store_credentials: _StoreCredentials = False,
    signing_key: _SigningKey = False,
    notify: _Notify = None,
    missed_after: _MissedAfter = "26h",
    check_pools: _CheckPools = False,
) -> None:
    """Create or update the work pools of the matrix and their concurrency limits, and optionally the credential
    blocks and the nightly's automations (idempotent; PREFECT_API_URL)."""
    from mlc_farm.farm.pools import init, signing_key_block
    from mlc_farm.farm.pools import store_credentials as save_credentials
    from mlc_farm.report import alerts

    # Every option is checked before anything is created, and only on the farm's own Prefect server.
    loaded = load_matrix(matrix)
    window = _window(missed_after)
    if notify:
        alerts.check_block_name(notify)
    _farm_api("farm init")
    notifier = alerts.notification_block(notify) if notify else None
    _say(init(loaded.matrix, pool_type.value, gpus, pool_limit))  # each step says what it did as it is done
    if store_credentials:
        _say(save_credentials(dict(os.environ))[0])
    if signing_key:
        _say(signing_key_block())
    if notify:
        _say(alerts.apply(notify, notifier, window))
    if check_pools:
        broken = [p for p in sorted({d.work_pool for d in loaded.matrix.devices}) if not _check_pool(loaded, p, None)]
        if broken:
            raise typer.Exit(1)


def _farm_api(what: str) -> None:
    """BadInput unless PREFECT_API_URL names the farm's Prefect server: without it, Prefect would start a
    temporary server whose pools, blocks and automations vanish with this command."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise BadInput(
            f"{what} works on the farm's Prefect server: set PREFECT_API_URL to it (`mlc-farm farm up` starts one "
            "here and prints it; `prefect server start` is another); nothing was created"
        )


def _say(lines: list[str]) -> None:
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def _window(missed_after: str) -> timedelta:
    """--missed-after as a duration Prefect's proactive triggers accept."""
    from mlc_farm.settings import parse_seconds

    try:
        window = timedelta(seconds=float(parse_seconds(missed_after)))
    except ValueError as e:
        raise BadInput(f"--missed-after {missed_after!r}: {e}") from None
    if window < timedelta(seconds=10):
        raise BadInput(f"--missed-after {missed_after!r}: Prefect's proactive triggers need at least 10 s")
    return window


@command(farm_app, "check-pool")
def farm_check_pool(
    pool: Annotated[str, typer.Argument(help="The work pool to check (a pool of the matrix's devices).")],
    matrix: MatrixOpt = Path("matrix.yaml"),
    store: Annotated[
        str | None,
        typer.Option(help="Where the check writes (default: beside the farm's store, <store>-pool-check)."),
    ] = None,
) -> None:
    """Build the farm's tiny Llama for each device of POOL through the deployments a nightly uses, check it on
    the pool's workers, and say what the pool can do: its toolchain and offload, the binaries its libraries hold,
    the check's fit, run, fidelity and speed. Exit 1 when the pool does not work (PREFECT_API_URL)."""
    if not _check_pool(load_matrix(matrix), pool, store):
        raise typer.Exit(1)


def _check_pool(loaded: LoadedMatrix, pool: str, store: str | None) -> bool:
    """Run one pool's check and print its answer; whether the pool works."""
    import tempfile

    import yaml

    from mlc_farm.farm.pool_check import check_matrix, check_store_url, report
    from mlc_farm.farm.pools import idle_pools
    from mlc_farm.flows.nightly import check_pool
    from mlc_farm.store import open_store

    doc = check_matrix(loaded.matrix, pool)
    _farm_api("farm check-pool")
    if idle := idle_pools([loaded.matrix.weights_pool, pool]):
        raise NoWorker("; ".join(idle))
    url = store or check_store_url(open_store().url)
    with tempfile.TemporaryDirectory(prefix="mlc-farm-pool-check-") as tmp:
        path = Path(tmp) / "pool-check.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        quiet_prefect()  # its answer is the report below, not Prefect's log lines
        done = check_pool(str(path), url)
    lines, works = report(open_store(url), loaded.matrix, pool, done.ok, done.message, done.rows)
    for line in lines:
        out.print(Text(line), soft_wrap=True)
    return works


@command(farm_app, "up")
def farm_up(
    directory: Annotated[Path, typer.Option("--dir", help="State of the stack (databases, logs, PIDs).")] = Path(
        ".farm"
    ),
    matrix: MatrixOpt = Path("matrix.yaml"),
) -> None:
    """Start PostgreSQL, a Prefect server, SeaweedFS and a process worker per pool on 127.0.0.1 (no Docker).
    Idempotent: a stack already running from DIR is reused; one whose processes died is started again on its
    data."""
    import secrets

    from mlc_farm.farm import stack
    from mlc_farm.farm.pools import pools_of

    pools = sorted(pools_of(load_matrix(matrix).matrix))
    use = f"use it: source {directory}/env.sh; mlc-farm farm init; prefect --no-prompt deploy --all"
    if (directory / "stack.json").exists():
        running = stack.LocalStack.load(directory)
        if running.alive():
            out.print(
                f"stack already up from {directory}: Prefect API {running.api_url}, S3 {running.s3_endpoint}",
                highlight=False,
                soft_wrap=True,
            )
            _point_settings(directory)
            out.print(use, highlight=False, soft_wrap=True)
            return
        out.print(f"the stack of {directory} has stopped services: starting it again on its data", soft_wrap=True)
        running.stop()
    before = _exports(directory / "env.sh")  # data kept by `farm down --keep-data` keeps its keys
    key = os.environ.get("AWS_ACCESS_KEY_ID") or before.get("AWS_ACCESS_KEY_ID", "mlc-farm")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY") or before.get("AWS_SECRET_ACCESS_KEY") or secrets.token_hex(16)
    bucket = "mlc-farm"
    env = {"MLC_FARM_STORE": f"s3://{bucket}/artifacts", "MLC_FARM_HOME": str(Path.cwd())}
    running = stack.up(directory, pools, key, secret, env)
    import boto3

    s3 = boto3.client("s3", endpoint_url=running.s3_endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                      region_name="us-east-1")  # fmt: skip
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from mlc_farm.farm.pools import store_credentials

    with temporary_settings({PREFECT_API_URL: running.api_url}):  # the stack's keys (and HF_TOKEN) in blocks too
        hf = {"HF_TOKEN": os.environ["HF_TOKEN"]} if os.environ.get("HF_TOKEN") else {}
        saved, blocks = store_credentials(running.env(key, secret) | hf)
    _write_env_sh(directory / "env.sh", running.env(key, secret) | env | blocks)
    for line in saved:
        out.print(line, highlight=False, soft_wrap=True)
    _point_settings(directory)
    out.print(
        f"stack up: Prefect API {running.api_url}, S3 {running.s3_endpoint}, workers for {', '.join(pools)}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(use, highlight=False, soft_wrap=True)


def _write_env_sh(env_sh: Path, exports: dict[str, str]) -> None:
    env_sh.touch(mode=0o600)
    env_sh.chmod(0o600)  # before the secret goes in
    env_sh.write_text("".join(f"export {k}={v}\n" for k, v in exports.items()))


def _point_settings(directory: Path) -> None:
    """Point the settings file at the farm of `directory` (its store, credential blocks and Prefect API), so that
    a new shell's `mlc-farm` commands use it without `source env.sh`; its secrets stay in env.sh and the blocks."""
    exports = _exports(directory / "env.sh")
    names = ["MLC_FARM_STORE", "MLC_FARM_AWS_CREDENTIALS_BLOCK", "MLC_FARM_HF_TOKEN_BLOCK", "PREFECT_API_URL"]
    settings = set_settings_block(_settings_tag(directory), {k: exports[k] for k in names if k in exports})
    out.print(Text(f"the next commands from this directory use this farm: {settings} names it (no secret)"))


def _settings_tag(directory: Path) -> str:
    """The mark of the settings-file block `farm up --dir DIR` writes and `farm down --dir DIR` removes."""
    return f"farm up --dir {json.dumps(str(directory.resolve()))}"


def _exports(env_sh: Path) -> dict[str, str]:
    """The `export K=V` lines of an env.sh that `farm up` wrote."""
    if not env_sh.is_file():
        return {}
    lines = (line.removeprefix("export ") for line in env_sh.read_text().splitlines() if line.startswith("export "))
    return dict(line.split("=", 1) for line in lines if "=" in line)


@command(farm_app, "down")
def farm_down(
    directory: Annotated[Path, typer.Option("--dir", help="The directory given to `farm up`.")] = Path(".farm"),
    keep_data: Annotated[
        bool, typer.Option("--keep-data", help="Keep the databases, the S3 data and env.sh for the next `farm up`.")
    ] = False,
) -> None:
    """Stop what `farm up` started and delete its data: the PostgreSQL database (the Prefect history), the S3
    data (every artifact built into it) and env.sh; --keep-data keeps them for the next `farm up`."""
    from mlc_farm.farm import stack

    if not (directory / "stack.json").exists():
        raise BadInput(f"no stack is running from {directory}")
    stack.LocalStack.load(directory).stop()
    if settings := remove_settings_block(_settings_tag(directory)):
        out.print(Text(f"{settings} no longer names this farm"))
    if keep_data:
        out.print(
            f"stack stopped; its data stays in {directory} for the next `mlc-farm farm up --dir {directory}`",
            soft_wrap=True,
        )
        return
    removed = stack.remove_data(directory)
    out.print(f"stack stopped; deleted its data ({', '.join(str(p) for p in removed)})", soft_wrap=True)
