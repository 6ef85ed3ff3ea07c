"""The checkpoint assets launch training through Dagster Pipes (marker ``distributed``): two
processes from the asset train as one process from the module does, rank 0's steps and metadata
reach the run, a failure carries its traceback, cancelling a run leaves nothing running, and the
Kubernetes launcher builds a valid pod with the right command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import training
from pipelines.launchers import (
    KubernetesTrainingLauncher,
    LocalTrainingLauncher,
    training_command,
)
from pipelines.processes import stop_process_group
from pipelines.resources import MlflowTracking, SandboxResource, TraceRunner
from pipelines.storage import ArtifactRef, ArtifactStore
from tests.distributed.launching import (
    GRPO,
    REPO,
    SFT,
    assert_same_grpo_step,
    assert_same_update,
    launch_training,
    load_weights,
)

pytestmark = pytest.mark.distributed


def stand_in(name: str, path: Path, version: str):
    """An upstream asset that hands over a folder made by a fixture."""

    @dg.asset(name=name, group_name="data" if name == "trace_dataset" else "training")
    def _stand_in() -> dg.Output:
        return dg.Output(ArtifactRef(name, version, str(path), version), data_version=dg.DataVersion(version))

    return _stand_in


def _overrides(settings: dict) -> str:
    return json.dumps(settings)


def test_checkpoints_through_pipes_on_two_processes(half_trained, tmp_path):
    """sft_checkpoint then grpo_checkpoint, each on two processes launched by the asset: the same
    results as one process launched from the module, and the run shows the child's steps."""
    sft_settings = {**SFT, "sft_learning_rate": 1e-5}  # a small SFT step keeps the half-trained policy's mixed rewards
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [training.base_model, stand_in("trace_dataset", half_trained["dataset"], "half"), training.sft_checkpoint,
         training.grpo_checkpoint],
        instance=instance,
        resources={"store": ArtifactStore(root=str(tmp_path / "store")), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                   "training_launcher": LocalTrainingLauncher(num_processes=2, threads_per_process=1),
                   "mlflow_tracking": MlflowTracking()},
        run_config={"ops": {
            "base_model": {"config": {"source": str(half_trained["sft"])}},
            "sft_checkpoint": {"config": {"preset": "cpu-smoke", "overrides_json": _overrides(sft_settings)}},
            "grpo_checkpoint": {"config": {"preset": "cpu-smoke", "overrides_json": _overrides(GRPO)}},
        }},
    )
    assert result.success
    meta = {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
            for e in result.get_asset_materialization_events()}
    for asset in ("sft_checkpoint", "grpo_checkpoint"):
        assert meta[asset]["training"].data["processes"] == 2
        assert meta[asset]["curves"].value.startswith("![")
        assert set(meta[asset]["timings_s"].data) == {"start_s", "train_s", "held_out_s"}
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("sft step 3/3: ") and "loss" in m for m in messages), messages
    assert any(m.startswith("grpo step 1/1: ") and "reward" in m for m in messages)

    sft_dir = Path(meta["sft_checkpoint"]["model_dir"].value)
    one = launch_training(1, "sft", half_trained["sft"], half_trained["dataset"], tmp_path / "sft1", sft_settings)
    assert_same_update(load_weights(half_trained["sft"]), load_weights(tmp_path / "sft1"), load_weights(sft_dir),
                       sft_settings["sft_learning_rate"])
    grpo_dir = Path(meta["grpo_checkpoint"]["model_dir"].value)
    one = launch_training(1, "grpo", sft_dir, half_trained["dataset"], tmp_path / "grpo1", GRPO)
    assert_same_grpo_step((one, tmp_path / "grpo1"), ({"processes": 2}, grpo_dir), sft_dir, straddle=False)


def test_a_failing_rank_fails_the_asset_with_its_traceback(half_trained, tmp_path):
    result = dg.materialize(
        [stand_in("base_model", half_trained["sft"], "sft"), stand_in("trace_dataset", half_trained["dataset"], "half"),
         training.sft_checkpoint],
        resources={"store": ArtifactStore(root=str(tmp_path / "store")), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                   "training_launcher": LocalTrainingLauncher(num_processes=2, threads_per_process=1),
                   "mlflow_tracking": MlflowTracking()},
        run_config={"ops": {"sft_checkpoint": {"config": {"preset": "cpu-smoke", "overrides_json": _overrides({**SFT, "sft_batch_size": 33})}}}},
        raise_on_error=False,
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.event_specific_data.error)
    assert "sft_batch_size: 33 sequences per step do not split over 2 processes" in text
    assert "rank0:" in text and "rank1:" in text and "ValueError" in text


CANCEL_SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    import dagster as dg
    from pipelines.assets import training
    from pipelines.launchers import LocalTrainingLauncher
    from pipelines.resources import MlflowTracking, SandboxResource, TraceRunner
    from pipelines.storage import ArtifactRef, ArtifactStore

    store, dataset, sft = sys.argv[1:4]

    @dg.asset(name="trace_dataset", group_name="data")
    def trace_dataset():
        return dg.Output(ArtifactRef("trace_dataset", "x", dataset, "x"), data_version=dg.DataVersion("x"))

    @dg.asset(name="sft_checkpoint", group_name="training")
    def sft_checkpoint():  # grpo_checkpoint reads <path>/model
        return dg.Output(ArtifactRef("sft_checkpoint", "x", str(Path(sft).parent), "x"), data_version=dg.DataVersion("x"))

    dg.materialize([trace_dataset, sft_checkpoint, training.grpo_checkpoint],
                   resources={"store": ArtifactStore(root=store), "trace_runner": TraceRunner(), "sandbox": SandboxResource(),
                              "training_launcher": LocalTrainingLauncher(num_processes=2, threads_per_process=1),
                              "mlflow_tracking": MlflowTracking()},
                   run_config={"ops": {"grpo_checkpoint": {"config": {"preset": "cpu-smoke", "steps": 1000, "overrides_json": sys.argv[4]}}}})
''')


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found.update(children)
        todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cancelling_a_grpo_run_leaves_nothing_running(half_trained, tmp_path):
    """SIGINT to the run's process is what Dagster's termination does to a run worker: every rank,
    its sandbox workers and containers are gone afterwards."""
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "model").symlink_to(half_trained["sft"])
    settings = {key: value for key, value in GRPO.items() if key != "grpo_steps"}
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-c", CANCEL_SCRIPT, str(tmp_path / "store"), str(half_trained["dataset"]),
         str(tmp_path / "sft" / "model"), json.dumps(settings)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 300
    while "grpo step 1/1000" not in (tmp_path / "run.log").read_text():
        assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.5)
    running = _descendants(process.pid)
    commands = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in running
                        if Path(f"/proc/{pid}/cmdline").exists())
    assert commands.count("pipelines.training_child") >= 3  # accelerate's torchrun and its two ranks
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    log.close()
    output = (tmp_path / "run.log").read_text()
    assert process.returncode != 0 and "stopping the training processes" in output
    for _ in range(20):  # orphans are reaped by init; give it a moment
        left = {pid for pid in running if _alive(pid)}
        if not left:
            break
        time.sleep(0.5)
    assert not left, {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left}
    print(f"cancelled in {time.monotonic() - started:.1f} s, {len(running)} processes stopped")
    try:
        import docker

        client = docker.from_env()
        owners = {c.labels.get("org.stepcode.sandbox.pid") for c in client.containers.list(
            all=True, filters={"label": "org.stepcode.sandbox"})}
        assert not owners & {str(pid) for pid in running}
    except docker.errors.DockerException:
        pass  # no daemon: the local backend was used


def test_the_launch_command():
    python = sys.executable
    assert training_command(1) == [python, "-m", "pipelines.training_child"]
    assert training_command(2)[:9] == [python, "-m", "accelerate.commands.launch", "--num_processes", "2",
                                       "--num_machines", "1", "--multi_gpu", "--mixed_precision"]
    fsdp = training_command(8, "configs/accelerate_fsdp.yaml", "python")
    assert fsdp == ["python", "-m", "accelerate.commands.launch", "--num_processes", "8", "--num_machines", "1",
                    "--config_file", str(REPO / "configs" / "accelerate_fsdp.yaml"), "-m", "pipelines.training_child"]
    with pytest.raises(ValueError, match="num_processes"):
        training_command(0)


def test_the_kubernetes_pod_is_valid_and_runs_the_child():
    from kubernetes.client import ApiClient, V1Pod

    launcher = KubernetesTrainingLauncher(image="registry.example/stepcode:1")  # the defaults: 8 GPUs, FSDP2
    pod = launcher.pod_body(env={"DAGSTER_PIPES_CONTEXT": "x"})
    assert isinstance(pod, V1Pod)
    body = ApiClient().sanitize_for_serialization(pod)
    (container,) = body["spec"]["containers"]
    assert container["image"] == "registry.example/stepcode:1"
    assert container["command"] == ["python", "-m", "accelerate.commands.launch", "--num_processes", "8",
                                    "--num_machines", "1", "--config_file", "configs/accelerate_fsdp.yaml",
                                    "-m", "pipelines.training_child"]
    assert container["workingDir"] == "/opt/stepcode"  # where the relative config path is read
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"  # quantities are strings in the API
    assert {"name": "DAGSTER_PIPES_CONTEXT", "value": "x"} in container["env"]
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in body["spec"]["volumes"])  # /dev/shm for NCCL
    assert body["spec"]["restartPolicy"] == "Never"
    # The rewards' Docker sandbox: a daemon as a native sidecar (the pod ends with training), privileged
    # alone; the trainer reaches it on the pod's loopback without privilege.
    (dockerd,) = body["spec"]["initContainers"]
    assert dockerd["restartPolicy"] == "Always" and dockerd["securityContext"]["privileged"] is True
    assert "--host=tcp://127.0.0.1:2375" in dockerd["args"] and dockerd["startupProbe"]["exec"]["command"]
    assert {"name": "DOCKER_HOST", "value": "tcp://127.0.0.1:2375"} in container["env"]
    assert not container.get("securityContext", {}).get("privileged")
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # The accelerate config the pod uses is the checkout's, for 8 processes.
    import yaml

    config = yaml.safe_load((REPO / "configs" / "accelerate_fsdp.yaml").read_text())
    assert config["distributed_type"] == "FSDP" and config["num_processes"] == 8
    with pytest.raises(dg.Failure, match="image"):
        KubernetesTrainingLauncher().launch(None, {})


UI_LOCATION = textwrap.dedent('''
    from pathlib import Path
    import dagster as dg
    from pipelines.assets import training
    from pipelines.launchers import LocalTrainingLauncher
    from pipelines.resources import MlflowTracking, SandboxResource, TraceRunner
    from pipelines.storage import ArtifactRef, ArtifactStore

    @dg.asset(name="trace_dataset", group_name="data")
    def trace_dataset():
        return dg.Output(ArtifactRef("trace_dataset", "x", {dataset!r}, "x"), data_version=dg.DataVersion("x"))

    @dg.asset(name="sft_checkpoint", group_name="training")
    def sft_checkpoint():  # grpo_checkpoint reads <path>/model
        return dg.Output(ArtifactRef("sft_checkpoint", "x", {sft_parent!r}, "x"), data_version=dg.DataVersion("x"))

    defs = dg.Definitions(
        assets=[trace_dataset, sft_checkpoint, training.grpo_checkpoint],
        jobs=[dg.define_asset_job("grpo_run", selection=["trace_dataset", "sft_checkpoint", "grpo_checkpoint"])],
        resources={{"store": ArtifactStore(root={store!r}), "trace_runner": TraceRunner(), "sandbox": SandboxResource(),
                   "training_launcher": LocalTrainingLauncher(num_processes=2, threads_per_process=1),
                   "mlflow_tracking": MlflowTracking()}},
    )
''')


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _training_processes() -> set[int]:
    """Every process running the training child, and everything below them (sandbox workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"pipelines.training_child" in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found | {child for pid in found for child in _descendants(pid)}


def test_a_run_from_the_ui_shows_the_steps_and_its_cancel_leaves_nothing(half_trained, tmp_path):
    """`dagster dev` (webserver, daemon, code server; runs in run workers, steps in subprocesses), the
    UI's GraphQL calls: launch grpo_checkpoint on two processes, read its step lines and metadata;
    launch a long one and terminate it as the UI's *Terminate* button does."""

    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "model").symlink_to(half_trained["sft"])
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    location = tmp_path / "location.py"
    location.write_text(UI_LOCATION.format(dataset=str(half_trained["dataset"]), sft_parent=str(tmp_path / "sft"),
                                           store=str(tmp_path / "store")))
    port = _free_port()
    log = (tmp_path / "dev.log").open("w")
    dev = subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "dev", "-f", str(location), "-p", str(port)],
                           cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                           env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)})
    try:
        client = _wait_for_ui(port, dev, tmp_path / "dev.log")
        instance = dg.DagsterInstance.from_config(str(tmp_path / "home"))
        settings = {key: value for key, value in GRPO.items() if key != "grpo_steps"}

        def launch(steps: int) -> str:
            return client.submit_job_execution("grpo_run", run_config={"ops": {"grpo_checkpoint": {"config": {
                "preset": "cpu-smoke", "steps": steps, "overrides_json": json.dumps(settings)}}}})

        finished = launch(1)
        assert _wait_for(lambda: client.get_run_status(finished).value in ("SUCCESS", "FAILURE"), 400)
        messages = [entry.user_message for entry in instance.all_logs(finished)]
        assert client.get_run_status(finished).value == "SUCCESS", messages[-20:]
        assert any(m.startswith("grpo step 1/1: ") and "reward" in m for m in messages), [m for m in messages if "grpo" in m]
        event = instance.get_latest_materialization_event(dg.AssetKey("grpo_checkpoint"))
        metadata = event.asset_materialization.metadata
        assert metadata["training"].data["processes"] == 2 and "curves" in metadata and "weights_hash" in metadata

        cancelled = launch(1000)
        assert _wait_for(lambda: any("grpo step 1/1000" in e.user_message for e in instance.all_logs(cancelled)), 400)
        running = _training_processes()
        assert len(running) >= 3  # accelerate's torchrun and its two ranks, at least
        client.terminate_run(cancelled)
        assert _wait_for(lambda: client.get_run_status(cancelled).value == "CANCELED", 120)
        assert _wait_for(lambda: not {pid for pid in running if _alive(pid)}, 30), \
            {pid: Path(f"/proc/{pid}/cmdline").read_bytes() for pid in running if _alive(pid)}
        assert not _training_processes()
    finally:
        stop_process_group(dev, grace_s=30)
        log.close()


def _wait_for(condition, timeout_s: float, every_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


def _wait_for_ui(port: int, dev: subprocess.Popen, log: Path):
    import urllib.request

    from dagster_graphql import DagsterGraphQLClient

    def up() -> bool:
        assert dev.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2):
                return True
        except OSError:
            return False

    assert _wait_for(up, 180), log.read_text()[-3000:]
    return DagsterGraphQLClient("127.0.0.1", port_number=port)
