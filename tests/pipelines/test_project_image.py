"""The project image (deploy/Dockerfile, built by scripts/project_image.sh, CPU torch): its CLI runs,
it serves the code location to a health check and a gRPC client from outside the container, and it
runs the training child exactly as KubernetesTrainingLauncher's pod would (image, command, working
dir, environment), started by a real Pipes client for real sft_checkpoint and grpo_checkpoint materializations (GRPO
verifying its rewards in the Docker sandbox through the daemon address the pod gives it)."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import training
from pipelines.launchers import KubernetesTrainingLauncher, TrainingLauncher
from pipelines.resources import MlflowTracking, SandboxResource
from pipelines.storage import ArtifactRef, ArtifactStore
from sandbox.docker_backend import docker_unavailable_reason

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[2]
LABEL = "org.stepcode.test-project-image"  # every container a test starts, for the cleanup


@pytest.fixture(scope="module")
def project_image() -> str:
    """The CPU image's tag; built when missing (base image and wheels included: minutes, once)."""
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs a Docker daemon: {reason} (scripts/ensure_docker.sh starts one)")
    started = time.monotonic()
    done = subprocess.run([str(REPO / "scripts" / "project_image.sh"), "cpu"], capture_output=True, text=True,
                          timeout=3600, env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-4000:]
    tag = done.stdout.strip().splitlines()[-1]
    print(f"{tag}: ready in {time.monotonic() - started:.0f} s")
    return tag


@pytest.fixture
def label() -> str:
    """A label value unique to the test; its containers are removed afterwards, whatever happened."""
    value = uuid.uuid4().hex
    yield value
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={value}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def _docker_run(image: str, label: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--label", f"{LABEL}={label}", image, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_the_cli_and_the_pods_files(project_image, label):
    done = _docker_run(project_image, label, "stepcode", "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: stepcode" in done.stdout and "train" in done.stdout
    # The pod's default command reads its accelerate config relative to the pod's workingDir.
    launcher = KubernetesTrainingLauncher(image=project_image)
    (container,) = launcher.pod_body().spec.containers
    config = container.command[container.command.index("--config_file") + 1]
    done = _docker_run(project_image, label, "sh", "-c", f'cd {container.working_dir} && test -f {config} && '
                       'python -c "import pipelines.launchers as l; print(l.REPO_ROOT)"')
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == container.working_dir  # editable install: configs/ beside the code


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_code_server_answers_from_outside(project_image, label):
    """The image's default command is the code server on 0.0.0.0:4000 (what a Helm user deployment
    runs); the host's dagster reaches it through the published port and loads the definitions."""
    from dagster._grpc.client import DagsterGrpcClient
    from dagster._serdes import deserialize_value

    port = _free_port()
    started = subprocess.run(["docker", "run", "-d", "--rm", "--label", f"{LABEL}={label}", "-p", f"127.0.0.1:{port}:4000",
                              project_image], capture_output=True, text=True, check=True).stdout.strip()
    dagster = str(Path(sys.executable).with_name("dagster"))
    deadline = time.monotonic() + 120
    while True:
        check = subprocess.run([dagster, "api", "grpc-health-check", "--host", "127.0.0.1", "--port", str(port)],
                               capture_output=True, text=True)
        if check.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    logs = subprocess.run(["docker", "logs", started], capture_output=True, text=True)
    assert check.returncode == 0, (check.stdout + check.stderr + logs.stderr)[-3000:]
    assert "gRPC connection successful" in check.stdout
    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    listed = deserialize_value(client.list_repositories())
    assert [symbol.attribute for symbol in listed.repository_symbols] == ["defs"]
    (pointer,) = listed.repository_code_pointer_dict.values()
    assert (pointer.module, pointer.working_directory) == ("pipelines.definitions", "/opt/stepcode")


class ContainerTrainingLauncher(TrainingLauncher):
    """KubernetesTrainingLauncher's pod run as a local container: the pod's image, command, working
    dir and environment, the Pipes session through dagster-docker's PipesDockerClient (context in
    the environment, messages from the container's logs), and ``shared`` mounted at its own path as
    the pod mounts the artifact volume."""

    image: str
    shared: str
    label: str
    docker_host: str = ""  # where the sidecar daemon is reached from the container (the pod: its loopback)

    def launch(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation:
        from dagster_docker import PipesDockerClient

        pod = KubernetesTrainingLauncher(image=self.image, num_processes=self.num_processes,
                                         accelerate_config=self.accelerate_config).pod_body()
        (container,) = pod.spec.containers
        env = {var.name: var.value for var in container.env or []}
        assert env["DOCKER_HOST"] == "tcp://127.0.0.1:2375"  # the sidecar, on the pod's loopback
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return PipesDockerClient().run(
            context=context, extras=extras, image=container.image, command=container.command,
            env={**env, "OMP_NUM_THREADS": "1"},  # two ranks on this machine's two cores
            container_kwargs={"working_dir": container.working_dir, "labels": {LABEL: self.label},
                              "volumes": {self.shared: {"bind": self.shared, "mode": "rw"}},
                              "shm_size": "1g"},  # the pod's /dev/shm volume
        )


@pytest.mark.distributed
def test_a_checkpoint_trains_in_the_image_through_pipes(project_image, label, tmp_path, tiny_trace_dataset,
                                                        tiny_checkpoint):
    """sft_checkpoint on two ranks (accelerate launch, DDP over gloo) inside the image, one step."""
    base = tiny_checkpoint(tmp_path / "base", seed=0)

    @dg.asset(name="base_model", group_name="training")
    def base_model() -> dg.Output:
        return dg.Output(ArtifactRef("base_model", "tiny", str(base), "tiny"), data_version=dg.DataVersion("tiny"))

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [base_model, tiny_trace_dataset, training.sft_checkpoint], instance=instance,
        resources={"store": ArtifactStore(root=str(tmp_path / "store")), "sandbox": SandboxResource(backend="local"),
                   "training_launcher": ContainerTrainingLauncher(image=project_image, shared=str(tmp_path),
                                                                  label=label, num_processes=2),
                   "mlflow_tracking": MlflowTracking()},
        run_config={"ops": {"sft_checkpoint": {"config": {
            "preset": "cpu-smoke", "max_tasks": 8, "eval_tasks": 0, "overrides_json": '{"sft_batch_size": 8}'}}}},
    )
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "sft_checkpoint"]
    meta = event.step_materialization_data.materialization.metadata
    model_dir = Path(meta["model_dir"].value)
    assert model_dir.is_relative_to(tmp_path) and (model_dir / "model.safetensors").is_file()
    assert meta["training"].data["processes"] == 2
    assert meta["weights_hash"].value != "" and meta["curves"].value.startswith("![")
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("sft step 1/1: ") and "loss" in m for m in messages), messages[-20:]


def bridge_gateway(network: dict) -> str:
    """The Docker bridge's address on this machine. Some daemons leave ``Gateway`` out of the
    network's IPAM config; the bridge interface (``docker0``) holds it then, the subnet's first host
    by Docker's default."""
    config = network["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return config["Gateway"]
    name = network.get("Options", {}).get("com.docker.network.bridge.name", "docker0")
    try:
        shown = subprocess.run(["ip", "-4", "-o", "addr", "show", name], capture_output=True, text=True,
                               check=False).stdout
    except FileNotFoundError:  # no iproute2
        shown = ""
    for word in shown.split():
        if "/" in word and word.split("/")[0].count(".") == 3:
            return word.split("/")[0]
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


class DaemonOverTcp:
    """The pod's Docker sidecar, stood in for by this machine's daemon: a TCP listener on the Docker
    bridge's gateway that relays each connection to the daemon's unix socket, recording the first
    line of each request (so the test can see the sandbox's containers being made through it)."""

    def __init__(self, socket_path: str = "/var/run/docker.sock"):
        import docker

        gateway = bridge_gateway(docker.from_env().networks.get("bridge").attrs)
        self.socket_path, self.requests = socket_path, []
        self.server = socket.create_server((gateway, 0))
        self.address = f"tcp://{gateway}:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            daemon = socket.socket(socket.AF_UNIX)
            daemon.connect(self.socket_path)
            threading.Thread(target=self._pipe, args=(client, daemon, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(daemon, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record and data[:4] in (b"GET ", b"POST", b"DELE"):
                    self.requests.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def test_a_grpo_step_in_the_image_verifies_its_rewards_in_the_docker_sandbox(project_image, label, tmp_path,
                                                                             tiny_trace_dataset, tiny_checkpoint):
    """grpo_checkpoint in the image as the pod runs it: the rewards' sandbox is Docker (production's
    only backend), reached over TCP as the pod reaches its sidecar daemon, with no privilege in the
    trainer's container."""
    import docker

    from sandbox.docker_backend import ensure_image

    sandbox_image = ensure_image(docker.from_env())
    tiny_checkpoint(tmp_path / "sft" / "model", seed=0)

    @dg.asset(name="sft_checkpoint", group_name="training")
    def sft_checkpoint() -> dg.Output:  # grpo_checkpoint reads <path>/model
        return dg.Output(ArtifactRef("sft_checkpoint", "tiny", str(tmp_path / "sft"), "tiny"),
                         data_version=dg.DataVersion("tiny"))

    daemon = DaemonOverTcp()
    try:
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [sft_checkpoint, tiny_trace_dataset, training.grpo_checkpoint], instance=instance,
            resources={"store": ArtifactStore(root=str(tmp_path / "store")),
                       "sandbox": SandboxResource(backend="docker", docker_image=sandbox_image),
                       "training_launcher": ContainerTrainingLauncher(image=project_image, shared=str(tmp_path),
                                                                      label=label, num_processes=1,
                                                                      docker_host=daemon.address),
                       "mlflow_tracking": MlflowTracking()},
            run_config={"ops": {"grpo_checkpoint": {"config": {
                "preset": "cpu-smoke", "steps": 1, "eval_tasks": 0, "max_response_tokens": 24}}}},
        )
    finally:
        daemon.close()
    assert result.success
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == "grpo_checkpoint"]
    meta = event.step_materialization_data.materialization.metadata
    assert (Path(meta["model_dir"].value) / "model.safetensors").is_file()
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("grpo step 1/1: ") and "reward" in m for m in messages), messages[-20:]
    created = [line for line in daemon.requests if "/containers/create" in line]
    assert created, daemon.requests[:20]  # the sandbox's workers were made through the pod's daemon address
