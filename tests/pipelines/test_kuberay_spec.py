"""deploy/kuberay/raycluster.yaml, the KubeRay cluster the Ray guide (docs/guides/ray.md) deploys: every pod
template is a valid Kubernetes object (it round-trips through the API's own models, so a misspelt or
misplaced field fails), each worker group grants what its sandbox backend needs and no more, the Ray
versions agree, and dagster-ray's KubeRayCluster takes the spec as it is."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dagster as dg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "deploy" / "kuberay" / "raycluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load(SPEC.read_text())


def groups(cluster: dict) -> dict[str, dict]:
    spec = cluster["spec"]
    return {"head": spec["headGroupSpec"], **{group["groupName"]: group for group in spec["workerGroupSpecs"]}}


def as_kubernetes_object(template: dict):
    """The pod template through the Kubernetes client's model (required fields enforced), and back."""
    from kubernetes.client import ApiClient

    class Response:
        data = json.dumps(template)

    client = ApiClient()
    model = client.deserialize(Response(), "V1PodTemplateSpec")
    return model, client.sanitize_for_serialization(model)


def test_every_pod_template_is_a_valid_kubernetes_object(cluster):
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert set(groups(cluster)) == {"head", "sandbox-local", "sandbox-docker"}
    for name, group in groups(cluster).items():
        model, back = as_kubernetes_object(group["template"])
        assert back == group["template"], f"{name}: fields the Kubernetes API does not know were dropped"
        for container in model.spec.containers:
            assert container.image and container.resources.limits["cpu"] == container.resources.requests["cpu"], name
        if name != "head":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name


def test_the_local_backend_group_grants_namespaces_and_nothing_else(cluster):
    (worker,) = groups(cluster)["sandbox-local"]["template"]["spec"]["containers"]
    security = worker["securityContext"]
    assert security["runAsUser"] == 0 and security["capabilities"] == {"add": ["SYS_ADMIN"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"} and security["appArmorProfile"] == {"type": "Unconfined"}
    assert not security.get("privileged")
    cpus = int(groups(cluster)["sandbox-local"]["rayStartParams"]["num-cpus"])
    assert cpus == int(worker["resources"]["limits"]["cpu"])  # one ShardWorker a CPU, each a sandbox worker


IN_POD = """
import sys
sys.path[:0] = ["/opt/stepcode", "/opt/pyseccomp"]
from sandbox import ExecutionRequest, open_sandbox
with open_sandbox("local", workers=1) as sandbox:
    result = sandbox.run(ExecutionRequest(code="import os; print(os.getuid())"))
print("ran", result.status, result.stdout.strip())
"""


def docker_flags(security: dict) -> list[str]:
    """The container's securityContext as `docker run` flags (Docker's defaults are the runtime defaults)."""
    flags = ["--user", str(security["runAsUser"])]
    flags += [f"--cap-add={cap}" for cap in security.get("capabilities", {}).get("add", [])]
    if security.get("seccompProfile", {}).get("type") == "Unconfined":
        flags.append("--security-opt=seccomp=unconfined")
    if security.get("appArmorProfile", {}).get("type") == "Unconfined":
        flags.append("--security-opt=apparmor=unconfined")
    return flags


@pytest.mark.docker
def test_the_local_backend_runs_in_a_container_granted_what_the_group_grants_and_refuses_without_it(cluster):
    """The local backend started inside a container with the sandbox-local group's securityContext
    runs a program as a uid of its own; without CAP_SYS_ADMIN it refuses to start (fails closed)."""
    import subprocess

    import pyseccomp

    from sandbox.docker_backend import docker_client, ensure_image

    client = docker_client()
    try:
        image = ensure_image(client)  # Debian with the interpreter the pod's image has
    finally:
        client.close()
    (worker,) = groups(cluster)["sandbox-local"]["template"]["spec"]["containers"]
    granted = docker_flags(worker["securityContext"])
    withheld = [flag for flag in granted if flag != "--cap-add=SYS_ADMIN"]
    assert withheld != granted

    def run(flags: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "run", "--rm", "--network=none", *flags, "-v", f"{REPO}:/opt/stepcode:ro",
             "-v", f"{Path(pyseccomp.__file__).parent}:/opt/pyseccomp:ro", "--entrypoint", "python3", image, "-c", IN_POD],
            capture_output=True, text=True, timeout=180)

    ran = run(granted)
    assert ran.returncode == 0, ran.stderr[-2000:]
    status, uid = ran.stdout.split()[-2:]
    assert status == "ok" and int(uid) >= 10_000  # the program ran as an unprivileged uid of its own
    refused = run(withheld)
    assert refused.returncode != 0 and "did not start" in refused.stderr, refused.stdout + refused.stderr[-2000:]


def test_the_docker_backend_group_keeps_privilege_in_its_own_daemon(cluster):
    containers = {c["name"]: c for c in groups(cluster)["sandbox-docker"]["template"]["spec"]["containers"]}
    worker, daemon = containers["ray-worker"], containers["dockerd"]
    assert worker["securityContext"]["capabilities"] == {"drop": ["ALL"]} and worker["securityContext"]["runAsNonRoot"]
    assert daemon["securityContext"] == {"privileged": True}
    host = {e["name"]: e["value"] for e in worker["env"]}["DOCKER_HOST"]
    assert host.startswith("tcp://127.0.0.1:") and f"--host={host}" in daemon["args"]  # loopback: this pod only
    cpus = int(groups(cluster)["sandbox-docker"]["rayStartParams"]["num-cpus"])
    assert cpus == sum(int(c["resources"]["limits"]["cpu"]) for c in containers.values())


def test_ray_versions_agree_with_the_pinned_ray(cluster):
    pinned = re.search(r'"ray\[client\]==([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert cluster["spec"]["rayVersion"] == pinned


@pytest.mark.ray
def test_dagster_rays_kuberay_cluster_takes_the_spec_as_it_is(cluster, ray_installed):
    from dagster_ray.kuberay.configs import RayClusterConfig, RayClusterSpec

    spec = cluster["spec"]
    config = RayClusterConfig(metadata=cluster["metadata"], spec=RayClusterSpec(
        head_group_spec=spec["headGroupSpec"], worker_group_specs=spec["workerGroupSpecs"], ray_version=spec["rayVersion"]))
    manifest = config.to_k8s(dg.build_init_resource_context(), env_vars={"STEPCODE_SANDBOX_IMAGE": "registry.example/sbx:1"})
    assert manifest["kind"] == "RayCluster" and manifest["spec"]["rayVersion"] == spec["rayVersion"]
    made = {g["groupName"]: g for g in manifest["spec"]["workerGroupSpecs"]}
    assert set(made) == {"sandbox-local", "sandbox-docker"}
    for group in made.values():
        as_kubernetes_object(group["template"])
        for container in group["template"]["spec"]["containers"]:
            assert {"name": "STEPCODE_SANDBOX_IMAGE", "value": "registry.example/sbx:1"} in container["env"]
