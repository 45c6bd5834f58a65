"""Where the farm's secrets come from: the environment, else the Prefect blocks the settings name, as Prefect
users keep them. The store's AWS credentials and endpoint from an `AwsCredentials` block (prefect-aws,
MLC_FARM_AWS_CREDENTIALS_BLOCK); the Hub token and the signing key from `Secret` blocks (MLC_FARM_HF_TOKEN_BLOCK,
MLC_FARM_SIGNING_KEY_BLOCK). Environment
variables win when both are set, so nothing that works today changes. A value read from a block is never put
in the environment (the toolchain never sees it) and is redacted from every message (`errors.redact_urls`)."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass

from mlc_farm.errors import BadInput, ServiceUnreachable, remember_secret
from mlc_farm.settings import load_settings

ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_PROFILE")  # the environment has credentials of its own


@dataclass(frozen=True)
class Aws:
    """What a boto3 session and client are made with (None: boto3's own chain, i.e. the environment)."""

    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    endpoint: str | None = None


def env_endpoint(env: Mapping[str, str] | None = None) -> str | None:
    """The S3 endpoint an environment names (boto3's own variables: the S3-specific one first)."""
    env = os.environ if env is None else env
    return env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")


def aws() -> Aws:
    """The S3 store's credentials: the environment's when it has some (or no block is named), else the block's.
    An endpoint in the environment wins over the block's."""
    name = load_settings().aws_credentials_block
    if name is None or any(os.environ.get(k) for k in ENV_KEYS):
        return Aws(endpoint=env_endpoint())
    found = _aws_block(name)
    return dataclasses.replace(found, endpoint=env_endpoint() or found.endpoint)


@functools.lru_cache(maxsize=8)
def _aws_block(name: str) -> Aws:
    from prefect_aws import AwsCredentials

    block = load_block(AwsCredentials, name, "MLC_FARM_AWS_CREDENTIALS_BLOCK")
    secret = block.aws_secret_access_key.get_secret_value() if block.aws_secret_access_key else None
    token = block.aws_session_token
    for value in (secret, token):
        remember_secret(value)
    params = block.aws_client_parameters
    return Aws(
        access_key_id=block.aws_access_key_id,
        secret_access_key=secret,
        session_token=token,
        region=block.region_name,
        endpoint=params.endpoint_url if params else None,
    )


def hf_token() -> str | None:
    """The Hub token: HF_TOKEN when set (huggingface_hub reads it itself: None), else the Secret block's."""
    name = load_settings().hf_token_block
    if name is None or os.environ.get("HF_TOKEN"):
        return None
    return _hf_block(name)


@functools.lru_cache(maxsize=8)
def _hf_block(name: str) -> str:
    from prefect.blocks.system import Secret

    value = str(load_block(Secret, name, "MLC_FARM_HF_TOKEN_BLOCK").get())
    remember_secret(value)
    return value


def load_block(kind: type, name: str, setting: str, made_by: str = "--store-credentials"):  # type: ignore[no-untyped-def]
    """A block by name. Not there: bad input naming the setting (exit 2). The Prefect server dropping the
    connection or failing (5xx) while it is read: a service (exit 3), whatever the block."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    where = f"the Prefect server at {PREFECT_API_URL.value() or '(no PREFECT_API_URL)'}"
    try:
        return kind.load(name)  # type: ignore[attr-defined]
    except ValueError:
        raise BadInput(
            f"{setting}={name!r}: no {kind.__name__} block of that name on {where}; `mlc-farm farm init {made_by}` "
            "creates it"
        ) from None
    except (httpx.TransportError, ConnectionError, TimeoutError) as e:
        raise ServiceUnreachable(
            f"{setting}={name!r}: {where} dropped the connection while the block was read ({type(e).__name__}); "
            "try again once it answers"
        ) from None
    except httpx.HTTPStatusError as e:
        if e.response.status_code >= 500 or e.response.status_code == 429:
            raise ServiceUnreachable(
                f"{setting}={name!r}: {where} failed (HTTP {e.response.status_code}) while the block was read; "
                "try again later"
            ) from None
        raise BadInput(f"{setting}={name!r}: {where} refused the block (HTTP {e.response.status_code})") from None
    except Exception as e:
        raise BadInput(
            f"{setting}={name!r}: the block could not be read from {where} ({type(e).__name__}); is "
            "PREFECT_API_URL set?"
        ) from None
