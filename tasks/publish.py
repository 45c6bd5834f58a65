"""Prefect task: publish one model x quantization to the Hugging Face Hub (thin over mlc_farm.distribute.hub)."""

from __future__ import annotations

from prefect import task

from mlc_farm.distribute import hub
from mlc_farm.records.outcomes import PublishResult
from mlc_farm.store import open_store


@task(
    retries=0,
    name="publish",
    task_run_name="publish {repo}",
    tags=["mlc-publish"],
)
def publish_unit(store_url: str, model: str, quantization: str, repo: str, private: bool | None) -> PublishResult:
    return hub.publish(open_store(store_url), model, quantization, repo, private)
