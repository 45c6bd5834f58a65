"""`mlc-farm farm init / up / down`: work pools, limits, and the local stack."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

from mlc_farm.cli._app import farm_app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import MatrixOpt, PoolType
from mlc_farm.cli._output import out
from mlc_farm.errors import BadInput
from mlc_farm.matrix import (
    load_matrix,
)


@command(farm_app, "init")
def farm_init(
    matrix: MatrixOpt = Path("matrix.yaml"),
    pool_type: Annotated[PoolType, typer.Option("--type", help="The work pools' type.")] = PoolType.process,
    gpus: Annotated[int, typer.Option(help="Compiles at once per pool (one per GPU).")] = 1,
    pool_limit: Annotated[int | None, typer.Option(help="Flow runs at once per pool.")] = None,
) -> None:
    """Create or update the work pools of the matrix and their concurrency limits (idempotent; PREFECT_API_URL)."""
    from mlc_farm.farm import init

    loaded = load_matrix(matrix)
    for line in init(loaded.matrix, pool_type.value, gpus, pool_limit):
        out.print(line, highlight=False)


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

    from mlc_farm import stack
    from mlc_farm.farm import pools_of

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
    env_sh = directory / "env.sh"
    env_sh.touch(mode=0o600)
    env_sh.chmod(0o600)  # before the secret goes in
    env_sh.write_text("".join(f"export {k}={v}\n" for k, v in (running.env(key, secret) | env).items()))
    out.print(
        f"stack up: Prefect API {running.api_url}, S3 {running.s3_endpoint}, workers for {', '.join(pools)}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(use, highlight=False, soft_wrap=True)


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
    from mlc_farm import stack

    if not (directory / "stack.json").exists():
        raise BadInput(f"no stack is running from {directory}")
    stack.LocalStack.load(directory).stop()
    if keep_data:
        out.print(
            f"stack stopped; its data stays in {directory} for the next `mlc-farm farm up --dir {directory}`",
            soft_wrap=True,
        )
        return
    removed = stack.remove_data(directory)
    out.print(f"stack stopped; deleted its data ({', '.join(str(p) for p in removed)})", soft_wrap=True)
