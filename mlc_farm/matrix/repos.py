"""Which Hub repo a model x quantization is published to: the matrix's `publish` rule, read by the plan, the
pre-flight and `mlc-farm publish` alike."""

from __future__ import annotations

from mlc_farm.errors import PublishError
from mlc_farm.matrix.schema import Matrix
from mlc_farm.settings import load_settings


def repo_for(matrix: Matrix, model: str, quantization: str) -> tuple[str, bool | None] | None:
    """(repo id, private) for a model x quantization, or None when it is not to be published; private None
    when the matrix does not say (then it follows the source: see `publish`)."""
    spec = matrix.model(model)
    if matrix.publish is None or not spec.publish.enabled:
        return None
    org = matrix.publish.org or load_settings().hf_org
    template = spec.publish.repo or matrix.publish.repo
    if "{org}" in template and not org:
        raise PublishError("publishing needs an organization: set publish.org in the matrix or MLC_FARM_HF_ORG")
    repo = template.format(org=org, model=model, quant=quantization)
    private = spec.publish.private if spec.publish.private is not None else matrix.publish.private
    return repo, private
