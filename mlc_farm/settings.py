"""Every MLC_FARM_* setting in one place: typed, validated, and read when a command or a flow starts (never at
import), so a bad value is one clear error naming the variable, and a changed value is seen.

The documentation's settings page is generated from this class (`settings_table`, docs/gen_reference.py).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlc_farm.errors import BadInput
from mlc_farm.whole_files import replace_whole

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d)")


def parse_seconds(value: Any) -> Any:
    """`14400`, `4h`, `4 h`, `1h30m`, `90s` -> seconds; anything else is left for the type check to refuse."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if parts and _PART.sub("", text).strip() == "":
        return sum(float(n) * _UNITS[u] for n, u in parts)
    raise ValueError("expected seconds or a duration like '4h', '30m', '1h30m'")


Seconds = Annotated[float, BeforeValidator(parse_seconds), Field(gt=0, allow_inf_nan=False)]


# Prefect's rule for block document names, checked with the other settings instead of at the first block call.
BlockName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=128)]


class Settings(BaseSettings):
    """mlc-farm's settings, from the environment (prefix MLC_FARM_)."""

    model_config = SettingsConfigDict(env_prefix="MLC_FARM_", extra="ignore", frozen=True)

    store: str = Field("file://./artifacts", description="The store: `file://DIR` (or a path) or `s3://bucket/prefix`.")
    mlc_llm: str | None = Field(
        None, description="The mlc_llm command, e.g. `/opt/mlc/bin/python -m mlc_llm` (default: this Python)."
    )
    pool_mlc_llm: dict[str, str] = Field(
        {},
        description="Per work pool, the mlc_llm command of an embedded run, as JSON, e.g. "
        '`{"cuda-stable": "/opt/stable/bin/python -m mlc_llm"}`: runtimes side by side on one machine (farm pools '
        "have their own images).",
    )
    parallel: int = Field(2, ge=1, le=256, description="Builds at once in embedded mode (`mlc-farm build`).")
    step_timeout: Seconds = Field(4 * 3600, description="Time limit of one toolchain step: seconds or `4h`, `30m`.")
    work_dir: Path | None = Field(None, description="Scratch space for builds (default: the system's temp dir).")
    cache: Path | None = Field(
        None, description="Hugging Face downloads of `hf:` sources, reused by builds (default `~/.cache/mlc-farm`)."
    )
    stale_upload_hours: float = Field(
        24, gt=0, allow_inf_nan=False, description="Unfinished uploads older than this belong to dead runs."
    )
    aws_credentials_block: BlockName | None = Field(
        None,
        description="An AwsCredentials block (prefect-aws) with the S3 store's keys and endpoint, for workers "
        "with no AWS variables (the environment's win when both are set).",
    )
    hf_token_block: BlockName | None = Field(
        None, description="A Secret block with the Hub token, for workers without HF_TOKEN (HF_TOKEN wins)."
    )
    signing_key: Path | None = Field(
        None,
        description="PEM file of the farm's elliptic-curve private key, which signs every build's attestation, catalog "
        "entry and published folder (default: the Secret block of MLC_FARM_SIGNING_KEY_BLOCK, else, for embedded "
        "builds only, this machine's own key, made on first use as `signing/private.pem` in MLC_FARM_CACHE). Refused "
        "when others can read or write it or write its directory.",
    )
    signing_key_block: BlockName | None = Field(
        None, description="A Secret block holding the signing key's PEM (`farm init --signing-key` makes one)."
    )
    trusted_keys: str | None = Field(
        None,
        description="Comma-separated PEM public key files whose signatures are accepted: the farm's attestations, and "
        "the entries `pull`, `install`, `export`, `url`, `validate` and `publish` take (several while a key rotates; "
        "default: the public half of the signing key).",
    )
    signature_days: float = Field(
        7,
        gt=0,
        allow_inf_nan=False,
        description="How long a catalog entry's signature is valid: each nightly "
        "renews those signed longer than MLC_FARM_SIGNATURE_RENEW_HOURS ago; a client refuses an expired one.",
    )
    signature_renew_hours: float = Field(
        20,
        ge=0,
        allow_inf_nan=False,
        description="A nightly re-signs an entry signed longer ago than this.",
    )
    hf_org: str | None = Field(None, description="Hub organization when the matrix's `publish.org` is not set.")
    home: str | None = Field(
        None, description="Where farm workers find this checkout (prefect.yaml's pull step; `/opt/mlc-farm` in images)."
    )
    lease_seconds: Seconds = Field(
        300, description="A build's lease on its key, renewed while it runs: a dead builder's lapses after this."
    )
    s3_chunk_mb: int = Field(16, ge=5, le=5120, description="S3 multipart part size in MB.")
    s3_concurrency: int = Field(8, ge=1, le=64, description="S3 parts or ranges in flight per process.")
    s3_range_mb: int = Field(8, ge=1, le=1024, description="S3 ranged-GET size in MB.")
    speed_seconds: Seconds = Field(
        30,
        description="The most a library's check spends timing its speeds (even below 1 s); it spends a tenth of the "
        "library's compile (at least 1 s) when that is less, and stops sooner when the figures are stable.",
    )
    speed_regression: float = Field(
        0.10,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="A speed is a regression when it dropped by more than this fraction and outside the spread of "
        "both toolchains' timed runs.",
    )
    status_seconds: Seconds = Field(
        60, description="How often `mlc-farm build` prints its status when the output is not a terminal."
    )
    retry_seconds: Seconds = Field(
        120, description="How long a call to S3 or the Hub keeps retrying 5xx, throttling and dropped connections."
    )

    @property
    def cache_dir(self) -> Path:
        return self.cache or Path.home() / ".cache" / "mlc-farm"


SETTINGS_FILE = "mlc-farm.env"  # in the working directory; MLC_FARM_SETTINGS_FILE names another


def settings_path() -> Path:
    return Path(os.environ.get("MLC_FARM_SETTINGS_FILE") or SETTINGS_FILE)


def settings_file() -> Path | None:
    """The settings file the quick start and `farm up` write (`MLC_FARM_X=value` lines), when there is one: what
    a new shell goes on with. The environment wins over it."""
    path = settings_path()
    return path if path.is_file() else None


# Besides MLC_FARM_*, the one name the settings file may give: the Prefect server `farm up` started, so that a
# new shell's commands read the farm's credential blocks without `source env.sh`.
EXPORTED = ("PREFECT_API_URL",)


def export_settings_file() -> None:
    """Put the settings file's EXPORTED names in this process's environment where the environment lacks them;
    before Prefect is imported, which reads its settings then."""
    from dotenv import dotenv_values

    if (file := settings_file()) is None:
        return
    values = dotenv_values(file)
    for name in EXPORTED:
        if (value := values.get(name)) and name not in os.environ:
            os.environ[name] = value


def _quoted(value: str) -> str:
    """`value` as python-dotenv reads it back (scripts/quickstart.sh writes the same way)."""
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _marks(tag: str) -> tuple[str, str]:
    return f"# {tag}: begin (a later line wins; removed by the command that wrote it)", f"# {tag}: end"


def _without_block(lines: list[str], tag: str) -> list[str]:
    begin, end = _marks(tag)
    if begin not in lines or end not in lines[lines.index(begin) :]:
        return lines
    start = lines.index(begin)
    stop = lines.index(end, start)
    return lines[:start] + lines[stop + 1 :]


def _rewrite(path: Path, lines: list[str]) -> None:
    """Replace the file whole (a temporary file renamed over it), keeping its mode."""
    replace_whole(path, "".join(line + "\n" for line in lines), path.stat().st_mode & 0o777 if path.exists() else None)


def set_settings_block(tag: str, values: dict[str, str]) -> Path:
    """Write `values` as one block marked `tag` at the end of the settings file (replacing the block of the same
    tag): they win over the lines above them, which come back when the block is removed."""
    path = settings_path()
    lines = _without_block(path.read_text().splitlines() if path.is_file() else [], tag)
    begin, end = _marks(tag)
    _rewrite(path, [*lines, begin, *(f"{k}={_quoted(v)}" for k, v in values.items()), end])
    return path


def remove_settings_block(tag: str) -> Path | None:
    """Remove the block marked `tag` from the settings file; the file itself goes when nothing else is in it.
    Returns the file when it held the block."""
    if (path := settings_file()) is None:
        return None
    lines = path.read_text().splitlines()
    rest = _without_block(lines, tag)
    if rest == lines:
        return None
    if any(line.strip() for line in rest):
        _rewrite(path, rest)
    else:
        path.unlink()
    return path


_last: tuple[object, Settings] | None = None  # the last settings read, and what they were read from


def _read_from(file: Path | None) -> object:
    """What the settings depend on: the MLC_FARM_ variables (case-insensitive, as pydantic-settings reads them)
    and the settings file's identity and version. The same inputs give the same (frozen) settings."""
    env = sorted((k.upper(), v) for k, v in os.environ.items() if k.upper().startswith("MLC_FARM_"))
    if file is None:
        return None, env
    try:
        st = file.stat()
    except OSError:  # gone since it was found: a key equal to none before, so it is read afresh
        return object()
    return str(file.absolute()), st.st_ino, st.st_mtime_ns, st.st_size, env


def load_settings() -> Settings:
    """Read the environment (and the settings file) now; a bad value is BadInput naming the variable, where it was
    set, the value and what is expected. Unchanged inputs give the settings read last without parsing them
    again: a build asks hundreds of times."""
    global _last
    file = settings_file()
    source = _read_from(file)
    if _last is not None and _last[0] == source:
        return _last[1]
    try:
        settings = Settings(_env_file=file)
        _last = source, settings
        return settings
    except ValidationError as e:
        problems = []
        for err in e.errors():
            name = "MLC_FARM_" + str(err["loc"][0]).upper()
            value = str(err.get("input"))
            shown = value if len(value) <= 40 else value[:37] + "..."
            where = f" (in {file})" if file and name not in os.environ else ""
            problems.append(f"{name}={shown!r}{where}: {err['msg'].removeprefix('Value error, ')}")
        raise BadInput("invalid setting: " + "; ".join(problems)) from None


def settings_table() -> str:
    """The settings table of the documentation (docs/reference/settings.md), generated from the class."""
    rows = ["| variable | default | what it sets |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = (
            "-"
            if default is None
            else f"`{default:g}`"
            if isinstance(default, float) and math.isfinite(default)
            else f"`{default}`"
        )
        rows.append(f"| `MLC_FARM_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
