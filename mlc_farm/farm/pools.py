"""`mlc-farm farm init`: the work pools of a matrix, their concurrency limits, idempotently.

One pool converts weights (`weights_pool`, CPU), one per device family compiles; each pool gets a
concurrency limit (builds at once) and a global concurrency limit `mlc-compile-<pool>` (compiles at once:
one per GPU). Docker and Kubernetes pools take their base job template from mlc_farm/farm/templates/ (package data),
the one its device family names (mlc_farm/devices.py).
"""

from __future__ import annotations

import json
from datetime import timedelta
from importlib.resources import files
from typing import Any, cast

from mlc_farm.devices import family as device_family
from mlc_farm.matrix.schema import Matrix

POOLS = files("mlc_farm.farm") / "templates"


ZOMBIE_AUTOMATION = "mlc-farm: crash zombie runs"
FARM_TAG = "mlc-farm"  # every deployment of prefect.yaml: the runs the farm's pools start
HEARTBEAT_SECONDS = 30  # Prefect's shortest flow-run heartbeat period (its default is 180 s)
ZOMBIE_AFTER = timedelta(seconds=3 * HEARTBEAT_SECONDS)  # no heartbeat for this long: its worker is gone
# A compile's slot of its pool's limit lapses this long after its holder last renewed it: a dead worker's slot
# is free again about when its run is crashed (Prefect renews a live holder's at three quarters of it).
COMPILE_SLOT_LEASE = ZOMBIE_AFTER


def compile_limit(pool: str) -> str:
    """The global concurrency limit that keeps one compile per GPU of a pool (`mlc-farm farm init`)."""
    return f"mlc-compile-{pool}"


def pools_of(matrix: Matrix) -> dict[str, str]:
    """pool -> device family (the weights pool is `cpu`)."""
    pools = {matrix.weights_pool: "cpu"}
    for d in matrix.devices:
        pools.setdefault(d.work_pool, d.family)
    return pools


def base_job_template(pool_type: str, family: str) -> dict[str, Any]:
    """The pool type's job template (ours for docker and kubernetes), whose runs send Prefect heartbeats every
    HEARTBEAT_SECONDS (a run whose worker dies without a word, SIGKILL or out of memory, is marked Crashed by
    the zombie automation instead of staying Running) and name the farm's signing key's Secret block."""
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker

        template: dict[str, Any] = ProcessWorker.get_default_base_job_template()
    else:
        path = POOLS / f"{pool_type}-{device_family(family).pool_template}.json"
        if not path.is_file():
            raise FileNotFoundError(f"no base job template {path} for a {pool_type} pool of family {family}")
        template = json.loads(path.read_text())
    env = template["variables"]["properties"]["env"]
    env["default"] = {
        **(env.get("default") or {}),
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_SECONDS),
        "MLC_FARM_SIGNING_KEY_BLOCK": key_block_name(),  # every worker signs with the farm's one key
    }
    return template


def key_block_name() -> str:
    """The Secret block of the farm's signing key (MLC_FARM_SIGNING_KEY_BLOCK, else mlc-farm-signing-key)."""
    from mlc_farm.settings import load_settings

    return load_settings().signing_key_block or "mlc-farm-signing-key"


def init(matrix: Matrix, pool_type: str, gpus: int, pool_limit: int | None) -> list[str]:
    """Create or update every pool and limit; returns what was done, a line each."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
        WorkPoolCreate,
    )
    from prefect.exceptions import ObjectNotFound

    done = []
    with get_client(sync_client=True) as client:
        for pool, family in pools_of(matrix).items():
            client.create_work_pool(
                WorkPoolCreate(
                    name=pool,
                    type=pool_type,
                    base_job_template=base_job_template(pool_type, family),
                    concurrency_limit=pool_limit,
                    description=f"mlc-farm {family} builds",
                ),
                overwrite=True,
            )
            done.append(f"work pool {pool} ({pool_type}, {family}): concurrency limit {pool_limit or 'none'}")
            name = compile_limit(pool)
            try:
                client.read_global_concurrency_limit_by_name(name)
                client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=gpus))
            except ObjectNotFound:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=gpus))
            done.append(f"global concurrency limit {name}: {gpus} compile(s) at once")
    done.append(_apply_zombie_automation())
    return done


def zombie_automation(silent: timedelta = ZOMBIE_AFTER) -> Any:
    """Prefect's recipe for zombie runs, as code: a flow run that sent a heartbeat and then nothing (no
    heartbeat, no final state) for `silent` is set Crashed. The nightly's dispatch then sees its build end
    Crashed and names the cell; its lease lapses; the next nightly rebuilds it. Only the runs of the farm's
    deployments (tag FARM_TAG), which its pools' templates make beat every HEARTBEAT_SECONDS: any other run
    on the server beats every 180 s by Prefect's default, and a server-wide rule would crash it alive."""
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=ZOMBIE_AUTOMATION,
        description=f"A flow run silent for {silent.total_seconds():g} s after a heartbeat: its worker died.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.id": f"prefect.tag.{FARM_TAG}"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=silent,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {silent.total_seconds():g} s: its worker died (killed, out of memory); the "
                    "build's lease lapses and the next run rebuilds it"
                ),
            )
        ],
    )


def _apply_zombie_automation() -> str:
    from prefect.automations import Automation

    wanted = zombie_automation()
    try:
        there = cast(Automation, Automation.read(name=ZOMBIE_AUTOMATION))
    except ValueError:
        wanted.create()
        return f"automation {ZOMBIE_AUTOMATION!r}: created (runs silent for {ZOMBIE_AFTER.total_seconds():g} s crash)"
    wanted.model_copy(update={"id": there.id}).update()
    return f"automation {ZOMBIE_AUTOMATION!r}: up to date"


def idle_pools(pools: list[str]) -> list[str]:
    """Why a run on these pools would wait for ever, one line per pool: it does not exist, or no worker polls it
    (none online: Prefect marks a worker offline once its heartbeats stop)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import WorkerStatus
    from prefect.exceptions import ObjectNotFound

    found = []
    with get_client(sync_client=True) as client:
        for pool in dict.fromkeys(pools):
            try:
                workers = client.read_workers_for_work_pool(pool)
            except ObjectNotFound:
                found.append(f"work pool {pool} does not exist: mlc-farm farm init, then prefect deploy --all")
                continue
            if not any(w.status == WorkerStatus.ONLINE for w in workers):
                found.append(f"no worker is polling pool {pool}: start one (prefect worker start --pool {pool})")
    return found


def signing_key_block() -> list[str]:
    """The farm's signing key in a Secret block (MLC_FARM_SIGNING_KEY_BLOCK, else mlc-farm-signing-key): made once,
    never replaced (what was signed with it stays verifiable); lines saying so, the public key and its fingerprint."""
    from prefect.blocks.system import Secret

    from mlc_farm.trust.dsse import fingerprint, new_private_key, public_key

    name = key_block_name()
    try:
        block: Any = Secret.load(name)
        pem = str(block.get()).encode()
        said = f"Secret block {name!r}: the farm's signing key, as it was (kept: what it signed stays verifiable)"
    except ValueError:  # no block of that name
        pem = new_private_key()
        Secret(value=pem.decode()).save(name)
        said = f"Secret block {name!r}: a new signing key"
    public = public_key(pem)
    return [
        said,
        f"workers: MLC_FARM_SIGNING_KEY_BLOCK={name}",
        f"public key ({fingerprint(public)}), give it to "
        "users (MLC_FARM_TRUSTED_KEYS, model_signing verify --public_key):",
        public.decode().strip(),
    ]


def store_credentials(env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Save the store's AWS credentials and endpoint (an AwsCredentials block) and the Hub token (a Secret block)
    of `env` on the Prefect server, under the names the settings give (else mlc-farm-aws, mlc-farm-hf-token), so
    that workers need no secrets in their environment. Returns a line each, never a value, and the settings
    that name the blocks saved (`MLC_FARM_AWS_CREDENTIALS_BLOCK=...`), for workers."""
    from prefect.blocks.system import Secret
    from prefect_aws import AwsClientParameters, AwsCredentials

    from mlc_farm.credentials import env_endpoint
    from mlc_farm.settings import load_settings

    settings = load_settings()
    aws_block = settings.aws_credentials_block or "mlc-farm-aws"
    hf_block = settings.hf_token_block or "mlc-farm-hf-token"
    done, names = [], {}
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        endpoint = env_endpoint(env)
        AwsCredentials(
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=env.get("AWS_SESSION_TOKEN"),
            region_name=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION"),
            aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
        ).save(aws_block, overwrite=True)
        names["MLC_FARM_AWS_CREDENTIALS_BLOCK"] = aws_block
        done.append(
            f"AwsCredentials block {aws_block!r}: the store's keys{' and endpoint' if endpoint else ''}; "
            f"workers: MLC_FARM_AWS_CREDENTIALS_BLOCK={aws_block}"
        )
    else:
        done.append("no AwsCredentials block: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set here")
    if token := env.get("HF_TOKEN"):
        Secret(value=token).save(hf_block, overwrite=True)
        names["MLC_FARM_HF_TOKEN_BLOCK"] = hf_block
        done.append(f"Secret block {hf_block!r}: the Hub token; workers: MLC_FARM_HF_TOKEN_BLOCK={hf_block}")
    else:
        done.append("no Secret block for the Hub: HF_TOKEN is not set here")
    return done, names
