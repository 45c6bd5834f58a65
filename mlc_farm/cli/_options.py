"""Options several commands share."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

MatrixOpt = Annotated[Path, typer.Option("--matrix", "-m", help="The matrix file.")]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="file://DIR or s3://bucket/prefix (default: $MLC_FARM_STORE, else ./mlc-farm.env's, else ./artifacts).",
    ),
]
RuntimeOpt = Annotated[
    str | None,
    typer.Option("--runtime", help="Only libraries built with this mlc_llm (a version, or 7+ digits of its commit)."),
]
ModelOpt = Annotated[list[str] | None, typer.Option("--model", help="Only this model (repeatable).")]

AllowUnsignedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unsigned",
        help="Take an unsigned entry none of whose builds carries an attestation, with a warning (an entry with a "
        "signature or attestation that fails, or one this machine saw signed, is refused anyway).",
    ),
]
AllowExpiredOpt = Annotated[
    bool,
    typer.Option(
        "--allow-expired",
        help="Take an entry whose signature has expired (no nightly renewed it), with a warning; every other check "
        "still holds.",
    ),
]


class Format(str, Enum):
    table = "table"
    json = "json"


class Runtime(str, Enum):
    """The runtimes `export` writes configs for."""

    webllm = "webllm"
    app = "app"
    mlc_serve = "mlc-serve"


class PoolType(str, Enum):
    """The work pool types `farm init` makes (their base job templates: mlc_farm/farm/templates/)."""

    process = "process"
    docker = "docker"
    kubernetes = "kubernetes"
