"""A nightly that reports: its outcome as a Prefect event, and the automations (as code) that send a
notification block's message when a nightly fails, keeps entries at previous builds, regresses, or does not
run at all. `mlc-farm farm init --notify BLOCK` applies them, idempotently (by name).

- Each nightly emits `mlc-farm.nightly.<outcome>` (ok, failed, kept-previous, regressed) with the counts,
  the failed cells and their reasons, the kept entries, the regressions, the `mlc-farm log` command of each
  and the summary artifact's link.
- `failed`: Prefect's own `prefect.flow-run.Failed`/`Crashed` of the nightly flow; the message is the run's
  final state message, which names the failing cells, their reasons and their `mlc-farm log` commands.
- `needs attention`: our `kept-previous` and `regressed` events (a run that completed); the message is theirs.
- `did not run`: Prefect's proactive trigger, no `prefect.flow-run.Completed` of the nightly flow within the
  window (a day and a bit by default): the worker pool was down, or the schedule was paused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, cast
from uuid import UUID

from pydantic import BaseModel

from mlc_farm.report.summary import Summary

NIGHTLY_FLOW = "nightly-build"
BUILD_MODEL_FLOW = "build-model"
EVENT_PREFIX = "mlc-farm.nightly."
Outcome = Literal["ok", "failed", "kept-previous", "regressed"]


class NightlyOutcome(BaseModel):
    """What a nightly's event says."""

    outcome: Outcome
    cells_ok: int
    failed: list[str]
    kept: list[str]
    regressions: list[str]
    artifact: str | None = None
    message: str


def outcome(summary: Summary, artifact: str | None) -> NightlyOutcome:
    """The nightly's outcome, worst first, and a message naming every cell that needs someone, why, and the
    command that prints its log."""
    failed = [
        f"{r.model} {r.quantization} {r.device}: {(r.detail or r.status).splitlines()[0][:300]} "
        f"(mlc-farm log {r.model} {r.quantization} {r.device})"
        for r in summary.failed
    ]
    kept = [
        f"{u.model} {u.quantization} kept at its previous builds: {u.detail or u.status} "
        f"(mlc-farm log {u.model} {u.quantization})"
        for u in summary.units
        if u.status in ("kept previous", "damaged")
    ]
    status: Outcome = "failed" if failed else "kept-previous" if kept else "regressed" if summary.regressions else "ok"
    lines = [f"mlc-farm nightly: {summary.message()}"]
    for title, items in (("failed", failed), ("kept at previous builds", kept), ("regressions", summary.regressions)):
        if items:
            lines += [f"{title}:", *(f"- {item}" for item in items)]
    if artifact:
        lines.append(f"summary: {artifact}")
    return NightlyOutcome(
        outcome=status,
        cells_ok=sum(r.status == "ok" for r in summary.rows),
        failed=failed,
        kept=kept,
        regressions=summary.regressions,
        artifact=artifact,
        message="\n".join(lines),
    )


def emit(found: NightlyOutcome, flow_run: str | None) -> None:
    """The nightly's event (Prefect relates it to the flow run it is emitted from)."""
    from prefect.events import emit_event

    emit_event(
        event=f"{EVENT_PREFIX}{found.outcome}",
        resource={"prefect.resource.id": f"mlc-farm.nightly.{flow_run or 'local'}", "prefect.resource.name": "nightly"},
        payload=found.model_dump(),
    )


def _flow(name: str) -> dict[str, str]:
    return {"prefect.resource.role": "flow", "prefect.resource.name": name}


def automations(block_id: UUID, missed_after: timedelta, prefix: str = "mlc-farm") -> list[Any]:
    """The automations of `farm init --notify`: each sends the notification block `block_id`."""
    return [
        _failed(
            block_id,
            f"{prefix}: nightly failed",
            NIGHTLY_FLOW,
            "A nightly ended Failed or Crashed: its final state message names the failing cells.",
            "mlc-farm nightly {{ flow_run.name }} ended {{ flow_run.state.name }}",
            "mlc-farm nightly {{ flow_run.name }} ended {{ flow_run.state.name }}:\n{{ flow_run.state.message }}",
        ),
        _failed(
            block_id,
            f"{prefix}: build-model failed",
            BUILD_MODEL_FLOW,
            "A build of one model (the build-model deployment) ended Failed or Crashed.",
            "mlc-farm build of {{ flow_run.parameters.model }} ({{ flow_run.name }}) ended {{ flow_run.state.name }}",
            "mlc-farm build-model run {{ flow_run.name }} for model {{ flow_run.parameters.model }} ended "
            "{{ flow_run.state.name }}:\n{{ flow_run.state.message }}",
        ),
        _needs_attention(block_id, f"{prefix}: nightly needs attention"),
        _did_not_run(block_id, f"{prefix}: nightly did not run", missed_after),
    ]


def _send(block_id: UUID, subject: str, body: str) -> list[Any]:
    from prefect.automations import SendNotification

    return [SendNotification(block_document_id=block_id, subject=subject, body=body)]


def _failed(block_id: UUID, name: str, flow: str, description: str, subject: str, body: str) -> Any:
    """A run of `flow` ended Failed or Crashed."""
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=name,
        description=description,
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(_flow(flow)),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=_send(block_id, subject, body),
    )


def _needs_attention(block_id: UUID, name: str) -> Any:
    """A nightly completed but kept entries at previous builds, or regressed (the farm's own events)."""
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=name,
        description="A nightly completed but kept catalog entries at previous builds, or regressed.",
        trigger=EventTrigger(
            expect={f"{EVENT_PREFIX}kept-previous", f"{EVENT_PREFIX}regressed"},
            match=ResourceSpecification({"prefect.resource.id": "mlc-farm.nightly.*"}),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=_send(block_id, "mlc-farm nightly: {{ event.payload.outcome }}", "{{ event.payload.message }}"),
    )


def _did_not_run(block_id: UUID, name: str, missed_after: timedelta) -> Any:
    """No nightly completed within `missed_after`: its pool or worker may be down."""
    from prefect.automations import Automation, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    hours = missed_after.total_seconds() / 3600
    return Automation(
        name=name,
        description=f"No nightly completed within {hours:g} h: the worker pool may be down.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Completed"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification(_flow(NIGHTLY_FLOW)),
            posture=Posture.Proactive,
            threshold=1,
            within=missed_after,
        ),
        actions=_send(
            block_id,
            "mlc-farm nightly did not run",
            f"No mlc-farm nightly ({NIGHTLY_FLOW}) completed in the last {hours:g} h: is its worker pool up? "
            "`prefect work-pool ls`, `prefect flow-run ls --flow-name nightly-build`",
        ),
    )


def apply(block: str, notifier: Any, missed_after: timedelta, prefix: str = "mlc-farm") -> list[str]:
    """Create or update the automations for the notification block `notifier` named `block` (TYPE/NAME, as
    `notification_block` found it); a line each."""
    from prefect.automations import Automation

    assert notifier._block_document_id is not None
    done = []
    for wanted in automations(notifier._block_document_id, missed_after, prefix):
        try:
            there = cast(Automation, Automation.read(name=wanted.name))
        except ValueError:
            wanted.create()
            done.append(f"automation {wanted.name!r}: created, notifies {block}")
            continue
        wanted.model_copy(update={"id": there.id}).update()
        done.append(f"automation {wanted.name!r}: up to date, notifies {block}")
    return done


def check_block_name(block: str) -> str:
    """A notification block's name as TYPE/NAME, else BadInput saying what to give (no Prefect API asked)."""
    from mlc_farm.errors import BadInput
    from mlc_farm.names import shorten

    kind, _, name = block.partition("/")
    if not kind or not name:
        raise BadInput(
            f"--notify {shorten(block)}: give TYPE/NAME of a notification block, e.g. custom-webhook/ops "
            "(`prefect block ls` lists them)"
        )
    return block


def notification_block(block: str) -> Any:
    """The notification block named `block` (any of Prefect's, as TYPE/NAME: `slack-webhook/ops`), else BadInput
    saying what to give: found before anything is created."""
    from prefect.blocks.core import Block

    from mlc_farm.errors import BadInput

    check_block_name(block)
    try:
        found = cast(Block, Block.load(block))
    except (ValueError, KeyError) as e:
        raise BadInput(
            f"--notify {block!r}: no such block ({e}); give TYPE/NAME of a notification block, e.g. "
            "custom-webhook/ops (`prefect block ls`)"
        ) from None
    if "notify" not in found.get_block_capabilities():
        raise BadInput(f"--notify {block!r}: a {type(found).__name__} block cannot send notifications")
    return found
