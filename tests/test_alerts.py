"""Issue 22, on the real Prefect server of the suite: credentials from blocks (prefect-aws's AwsCredentials,
a Secret) serve a build whose environment has no secrets; a failed or missed nightly notifies through a
notification block (a custom webhook, posting to a small HTTP server here)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from tests.conftest import TOKEN
from tests.helpers import ROOT, run_cli
from tests.hub_server import LocalHub

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

MATRIX = """
quantizations: [q4f16_1]
devices:
  - {name: cpu, family: cpu, target: llvm, pool: mlc-cpu}
models:
  - {id: tiny, source: {path: models/a}, conv_template: LM}
"""
SECRET_NAMES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                "AWS_DEFAULT_REGION", "AWS_REGION", "HF_TOKEN")  # fmt: skip


class Hook:
    """A webhook receiver: every POST body it was sent."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, needle: str, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := [m for m in self.received if needle in json.dumps(m)]:
                return found[0]
            time.sleep(0.5)
        raise AssertionError(f"no notification with {needle!r} in {timeout:g} s; got {self.received}")


@pytest.fixture
def hook() -> Iterator[tuple[Hook, str]]:
    """A custom-webhook notification block posting to a Hook; the automations `farm init --notify` made go
    with it."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    receiver, name = Hook(), f"hook-{uuid.uuid4().hex[:8]}"
    CustomWebhookNotificationBlock(name=name, url=receiver.url,
                                   json_data={"subject": "{{subject}}", "body": "{{body}}"}).save(name)  # fmt: skip
    yield receiver, f"custom-webhook/{name}"
    for title in ("nightly failed", "build-model failed", "nightly needs attention", "nightly did not run"):
        with contextlib.suppress(ValueError):
            Automation.read(name=f"mlc-farm: {title}").delete()
    receiver.server.shutdown()


def write(tiny_models: Path, tmp_path: Path, extra: str = "") -> Path:
    path = tiny_models / f"alerts-{tmp_path.name}.yaml"
    path.write_text(MATRIX + extra)
    return path


def everything_prefect_kept(api: str) -> str:
    """The server's events, artifacts, logs and block documents... as text, to look for secrets in."""
    with httpx.Client(base_url=api, timeout=30) as client:
        events = client.post("/events/filter", json={"limit": 50}).json()
        artifacts = client.post("/artifacts/filter", json={"limit": 200}).json()
        logs = client.post("/logs/filter", json={"limit": 200}).json()
    return json.dumps([events, artifacts, logs])


def nightly_events(api: str, since: datetime, timeout: float = 60) -> list[dict]:
    """The nightlies' events since `since`, once the server has stored one (its event persister writes in
    batches)."""
    deadline = time.monotonic() + timeout
    wanted = {"event": {"prefix": ["mlc-farm.nightly."]}, "occurred": {"since": since.isoformat()}}
    with httpx.Client(base_url=api, timeout=30) as client:
        while True:
            found = client.post("/events/filter", json={"filter": wanted, "limit": 10}).json()["events"]
            if found or time.monotonic() > deadline:
                return list(found)
            time.sleep(0.5)


def test_blocks_from_farm_init_serve_a_build_with_no_secrets_in_its_environment(
    prefect_api: str, s3_store_url: str, hub: LocalHub, tiny_models: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    names = {"MLC_FARM_AWS_CREDENTIALS_BLOCK": f"aws-{uuid.uuid4().hex[:8]}",
             "MLC_FARM_HF_TOKEN_BLOCK": f"hf-{uuid.uuid4().hex[:8]}"}  # fmt: skip
    for k, v in names.items():
        monkeypatch.setenv(k, v)
    matrix = write(tiny_models, tmp_path, "publish: {org: farm-org}\n")
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    made = run_cli("farm", "init", "--matrix", str(matrix), "--store-credentials")
    assert made.returncode == 0, made.stdout + made.stderr
    assert f"AwsCredentials block {names['MLC_FARM_AWS_CREDENTIALS_BLOCK']!r}" in made.stdout
    assert f"Secret block {names['MLC_FARM_HF_TOKEN_BLOCK']!r}" in made.stdout
    assert secret not in made.stdout and TOKEN not in made.stdout

    began, dump = datetime.now(timezone.utc), tmp_path / "toolchain-env.jsonl"
    worker = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES} | {"MLC_DOUBLE_ENV_DUMP": str(dump)}
    built = subprocess.run([sys.executable, "-m", "mlc_farm.cli", "build", "--matrix", str(matrix), "--store",
                            s3_store_url], capture_output=True, text=True, env=worker, cwd=ROOT, timeout=600)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert len(hub.commits("farm-org/tiny-q4f16_1-MLC")) == 1  # published with the Secret block's token
    listed = run_cli("ls", "--store", s3_store_url)  # the store holds the build (read with the env's keys)
    assert "tiny" in listed.stdout

    said = nightly_events(prefect_api, began)  # the nightly said how it went
    assert said and said[0]["event"] == "mlc-farm.nightly.ok" and said[0]["payload"]["cells_ok"] == 1
    assert said[0]["payload"]["artifact"] and any(r["prefect.resource.role"] == "flow-run" for r in said[0]["related"])
    seen = [built.stdout, built.stderr, dump.read_text(), everything_prefect_kept(prefect_api)]
    assert dump.read_text() and not [s for s in (secret, TOKEN) for text in seen if s in text]

    monkeypatch.setenv("MLC_FARM_AWS_CREDENTIALS_BLOCK", "no-such-block")
    for name in SECRET_NAMES:
        monkeypatch.delenv(name, raising=False)
    missing = run_cli("ls", "--store", s3_store_url)
    assert missing.returncode == 2 and "MLC_FARM_AWS_CREDENTIALS_BLOCK='no-such-block': no AwsCredentials" in (
        missing.stderr
    )


def test_a_nightly_with_a_failing_cell_notifies_with_its_cells_and_log_commands(
    hook: tuple[Hook, str], tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver, block = hook
    matrix = write(tiny_models, tmp_path)
    made = run_cli("farm", "init", "--matrix", str(matrix), "--notify", block)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "automation 'mlc-farm: nightly failed': created" in made.stdout
    again = run_cli("farm", "init", "--matrix", str(matrix), "--notify", block)  # idempotent
    assert "automation 'mlc-farm: nightly failed': up to date" in again.stdout
    monkeypatch.setenv("MLC_DOUBLE_FAIL", "compile")
    failed = run_cli("build", "--matrix", str(matrix), "--store", str(tmp_path / "store"))
    assert failed.returncode == 1
    message = receiver.wait_for("mlc-farm log tiny q4f16_1 cpu")
    assert "ended Failed" in message["subject"]
    assert "tiny q4f16_1 cpu: " in message["body"] and "injected failure in compile" in message["body"]


def test_a_failed_build_model_run_notifies_in_its_own_words(
    hook: tuple[Hook, str], tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlc_farm.flows.nightly import build_model

    receiver, block = hook
    matrix = write(tiny_models, tmp_path)
    made = run_cli("farm", "init", "--matrix", str(matrix), "--notify", block)
    assert "automation 'mlc-farm: build-model failed': created" in made.stdout, made.stdout + made.stderr
    monkeypatch.setenv("MLC_DOUBLE_FAIL", "compile")
    state = build_model("tiny", matrix_path=str(matrix), store=str(tmp_path / "store"), mode="embedded",
                        return_state=True)  # fmt: skip
    assert state.is_failed()
    message = receiver.wait_for("mlc-farm build of tiny")
    assert "ended Failed" in message["subject"] and "for model tiny ended Failed" in message["body"]
    assert "injected failure in compile" in message["body"]


def test_a_nightly_that_did_not_run_notifies(hook: tuple[Hook, str], tiny_models: Path, tmp_path: Path) -> None:
    receiver, block = hook
    made = run_cli("farm", "init", "--matrix", str(write(tiny_models, tmp_path)), "--notify", block,
                   "--missed-after", "10s")  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    message = receiver.wait_for("did not run", timeout=60)  # no nightly completes here: 10 s, then Prefect says so
    assert "No mlc-farm nightly (nightly-build) completed in the last" in message["body"]


def test_farm_init_crashes_zombie_runs_and_a_nightly_names_a_pool_no_worker_polls(
    tiny_models: Path, tmp_path: Path
) -> None:
    """A worker killed mid-build (an OOM-killed pod) sends no more heartbeats: farm init's automation sets its
    run Crashed after three missed ones; runs on its pools send them. A pool no worker polls is named at once."""
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    from mlc_farm.farm.pools import ZOMBIE_AUTOMATION
    from mlc_farm.flows.nightly import nightly_build

    matrix = tiny_models / f"idle-{tmp_path.name}.yaml"  # pools of its own: no other test's worker polls them
    matrix.write_text(MATRIX.replace("pool: mlc-cpu", "pool: mlc-idle") + "weights_pool: mlc-idle\n")
    made = run_cli("farm", "init", "--matrix", str(matrix))
    assert made.returncode == 0 and f"automation {ZOMBIE_AUTOMATION!r}" in made.stdout, made.stdout + made.stderr
    zombie = Automation.read(name=ZOMBIE_AUTOMATION)
    try:
        trigger = zombie.trigger
        assert trigger.posture == "Proactive" and trigger.within.total_seconds() == 90  # type: ignore[union-attr]
        assert trigger.after == {"prefect.flow-run.heartbeat"}  # type: ignore[union-attr]
        # The farm's runs only: any other beats every 180 s (Prefect's default) and would be crashed alive.
        related = json.loads(zombie.model_dump_json())["trigger"]["match_related"]
        assert related in ({"prefect.resource.id": "prefect.tag.mlc-farm"}, [{"prefect.resource.id": "prefect.tag.mlc-farm"}])  # fmt: skip
        assert zombie.actions[0].state == "CRASHED"  # type: ignore[union-attr]
        with get_client(sync_client=True) as client:
            pool = client.read_work_pool("mlc-idle")
        env = pool.base_job_template["variables"]["properties"]["env"]["default"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
        began = time.monotonic()
        state = nightly_build(str(matrix), store=str(tmp_path / "store"), mode="farm", return_state=True)
        assert state.is_failed() and "no worker is polling pool mlc-idle" in (state.message or "")
        assert time.monotonic() - began < 60  # said, not waited for
    finally:
        zombie.delete()


def own_pool_matrix(tiny_models: Path, tmp_path: Path) -> tuple[Path, str]:
    """A one-cell matrix whose only pool is new: what `farm init` creates is this test's alone."""
    pool = f"pool-{uuid.uuid4().hex[:10]}"
    matrix = tiny_models / f"init-{tmp_path.name}.yaml"
    matrix.write_text(
        f"quantizations: [q4f16_1]\nweights_pool: {pool}\n"
        f"devices: [{{name: cpu, family: cpu, target: llvm, pool: {pool}}}]\n"
        "models: [{id: tiny-llama-a, source: {path: models/a}, conv_template: LM}]\n"
    )
    return matrix, pool


def test_farm_init_checks_everything_before_it_creates_anything(tiny_models: Path, tmp_path: Path) -> None:
    """Without a Prefect API it refuses (exit 2, saying how to get one) instead of filling a temporary server
    that vanishes; with one, a --notify block that does not exist is refused before any pool is made."""
    matrix, _ = own_pool_matrix(tiny_models, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a shell with no farm to talk to
    offline = subprocess.run([sys.executable, "-m", "mlc_farm.cli", "farm", "init", "--matrix", str(matrix)],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
    said = " ".join(offline.stderr.split())
    assert offline.returncode == 2 and "set PREFECT_API_URL" in said and "nothing was created" in said, said
    assert "Traceback" not in offline.stdout + offline.stderr


@pytest.mark.usefixtures("prefect_api")
def test_farm_init_with_a_missing_notify_block_creates_no_pool(tiny_models: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    matrix, pool = own_pool_matrix(tiny_models, tmp_path)
    refused = run_cli("farm", "init", "--matrix", str(matrix), "--notify", "custom-webhook/nobody-made-it")
    assert refused.returncode == 2 and "no such block" in refused.stderr, refused.stderr
    with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
        client.read_work_pool(pool)
