"""execution_traces on a real local Ray cluster (started by dagster-ray's LocalRay for the step): the
same dataset as this machine's runner, the Docker sandbox inside Ray workers, a worker killed in the
middle of a shard, and a shard whose programs all time out. Cancelling from the UI: test_ui.py."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.assets import data
from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
from pipelines.storage import ArtifactStore

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_installed")]

DATA_ASSETS = [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset]
# Sized for a 2-CPU machine: a small object store, no dashboard.
RAY_OPTIONS = {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 128 * 2**20}


def ray_runner(**options):
    from dagster_ray import LocalRay

    from pipelines.ray_runner import RayTraceRunner

    return RayTraceRunner(ray_cluster=LocalRay(ray_init_options=RAY_OPTIONS), **options)


def materialize(root: Path, runner, ops: dict, backend: str = "local", assets=DATA_ASSETS) -> dict:
    result = dg.materialize(
        assets,
        resources={"store": ArtifactStore(root=str(root)), "sandbox": SandboxResource(backend=backend),
                   "trace_runner": runner, "benchmark_files": BenchmarkFiles()},
        run_config={"ops": ops},
    )
    assert result.success
    return {
        event.asset_key.to_user_string(): {k: getattr(v, "value", v) for k, v in
                                           event.step_materialization_data.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
    }


def shard_keys(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "execution_traces_shards").iterdir())


def traces_without_timing(meta: dict):
    """execution_traces' rows in program order, without duration_s (the one column that measures time)."""
    return read_traces(meta).drop_columns(["duration_s"]).sort_by("program_id")


def read_traces(meta: dict):
    shards = sorted(Path(meta["execution_traces"]["artifact"]).glob("*.parquet"))
    return pa.concat_tables(pq.read_table(shard) for shard in shards)


def test_ray_traces_the_same_dataset_as_this_machine(tmp_path):
    ops = {"raw_programs": {"config": {"generator_count": 120, "generator_seed": 5, "generator_levels": [1, 2, 3, 4]}},
           "execution_traces": {"config": {"num_shards": 6}}}
    here = materialize(tmp_path / "local", TraceRunner(), ops)
    on_ray = materialize(tmp_path / "ray", ray_runner(), ops)

    runner = on_ray["execution_traces"]["trace_runner"]
    assert runner["runner"] == "ray" and runner["cluster"] == "LocalRay"
    assert sum(runner["shards_per_node"].values()) == 6 and runner["sandbox_backends"] == ["local"]
    assert here["execution_traces"]["trace_runner"]["runner"] == "local"
    # The same shard cache keys, the same traces, the same published dataset, file for file.
    assert shard_keys(tmp_path / "local") == shard_keys(tmp_path / "ray")
    assert traces_without_timing(here).equals(traces_without_timing(on_ray))
    local_dataset, ray_dataset = (Path(meta["trace_dataset"]["artifact"]) for meta in (here, on_ray))
    files = sorted(p.relative_to(local_dataset) for p in local_dataset.rglob("*.parquet"))
    assert files and files == sorted(p.relative_to(ray_dataset) for p in ray_dataset.rglob("*.parquet"))
    for name in files:
        assert (local_dataset / name).read_bytes() == (ray_dataset / name).read_bytes(), name
    assert here["trace_dataset"]["kept_programs"] == on_ray["trace_dataset"]["kept_programs"] > 60

    # A second materialization on Ray traces nothing: the shards are cached by content.
    again = materialize(tmp_path / "ray", ray_runner(), ops)
    assert again["execution_traces"]["executed_programs"] == 0 and again["execution_traces"]["shards_reused"] == 6


@pytest.mark.docker
def test_the_docker_sandbox_runs_inside_ray_workers(tmp_path):
    from sandbox.docker_backend import LABEL, docker_client

    ops = {"raw_programs": {"config": {"generator_count": 30, "generator_seed": 6}},
           "execution_traces": {"config": {"num_shards": 3}}}
    meta = materialize(tmp_path, ray_runner(), ops, backend="docker", assets=DATA_ASSETS[:3])
    traces = meta["execution_traces"]
    assert traces["trace_runner"]["sandbox_backends"] == ["docker"]
    here = materialize(tmp_path / "here", TraceRunner(), ops, assets=DATA_ASSETS[:3])  # the local backend, no Ray
    assert traces["statuses"] == here["execution_traces"]["statuses"] and traces["statuses"]["ok"] >= 25
    client = docker_client(timeout=10)
    try:
        left = [c.name for c in client.containers.list(all=True, filters={"label": LABEL})
                if (c.labels or {}).get(f"{LABEL}.host") == os.uname().nodename]
    finally:
        client.close()
    assert not left, f"sandbox containers left after the run: {left}"


def _ray_workers_tracing() -> list[int]:
    """Pids of Ray actor processes running ShardWorker.trace (Ray titles its workers by their task)."""
    return _shard_worker_pids("ray::ShardWorker.trace")


def _shard_worker_pids(title: str = "ray::ShardWorker") -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if command.startswith(title):
                found.append(int(entry.name))
    return found


def test_a_ray_worker_killed_mid_shard_costs_only_that_shard(tmp_path):
    count, shards = 1200, 6
    killed: list[int] = []

    def kill_one_worker_mid_shard():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            pids = _ray_workers_tracing()
            if pids:
                time.sleep(0.3)  # well into its shard
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_shard, daemon=True)
    killer.start()
    ops = {"raw_programs": {"config": {"generator_count": count, "generator_seed": 7}},
           "execution_traces": {"config": {"num_shards": shards}}}
    meta = materialize(tmp_path, ray_runner(), ops, assets=DATA_ASSETS[:3])
    killer.join(timeout=5)
    assert killed, "no Ray worker was seen tracing a shard"
    traces = meta["execution_traces"]
    # The run completed; one shard was traced twice, the others once; nothing lost, nothing twice.
    assert traces["shards_retried"] == 1 and traces["shards_traced"] == shards
    assert traces["executed_programs"] == count
    table = read_traces(meta)
    ids = table.column("program_id").to_pylist()
    assert len(ids) == len(set(ids)) == count
    assert len(shard_keys(tmp_path)) == shards  # one artifact a shard; no staging folder left
    assert set(traces["statuses"]) <= {"ok", "error"}  # no program lost with the worker (killed, no result)


def test_a_shard_whose_programs_all_time_out_is_slow_not_failed(tmp_path):
    programs = tmp_path / "loops.jsonl"
    loop = "def f(x):\n    while True:\n        x += 1\n    return x\n"
    programs.write_text("".join(json.dumps({"id": f"loop_{i}", "code": loop, "input": str(i), "output": "0"}) + "\n"
                                for i in range(4)))
    ops = {"raw_programs": {"config": {"generator_count": 0, "files": [str(programs)]}},
           "execution_traces": {"config": {"num_shards": 1, "timeout_s": 0.5}}}
    meta = materialize(tmp_path / "store", ray_runner(), ops, assets=DATA_ASSETS[:3])
    assert meta["execution_traces"]["statuses"] == {"timeout": 4}
    assert meta["execution_traces"]["shards_traced"] == 1


def _session_processes(session: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == session and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def test_a_running_cluster_is_reached_by_its_address(tmp_path):
    """What production does (STEPCODE_RAY_ADDRESS): a cluster started apart from the run (`ray start
    --head`), reached by address; the run leaves the cluster running and its own workers gone."""
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile

    from pipelines.ray_runner import RayAddress, RayTraceRunner

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # --block in a session of its own: every process of this cluster is in that session, so the test
    # stops this cluster alone (`ray stop` would stop every Ray on the machine).
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=2", "--include-dashboard=false", f"--object-store-memory={128 * 2**20}",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        ops = {"raw_programs": {"config": {"generator_count": 40, "generator_seed": 12}},
               "execution_traces": {"config": {"num_shards": 4}}}
        runner = RayTraceRunner(ray_cluster=RayAddress(address=f"127.0.0.1:{port}"))
        meta = materialize(tmp_path / "store", runner, ops, assets=DATA_ASSETS[:3])  # retries until the head answers
        traces = meta["execution_traces"]
        assert traces["trace_runner"]["cluster"] == f"Ray cluster at 127.0.0.1:{port}"
        assert traces["shards_traced"] == 4 and traces["rows"] == 40
        deadline = time.monotonic() + 30  # killed actors' processes exit asynchronously
        while _shard_worker_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _shard_worker_pids()  # the run's workers are gone
        assert head.poll() is None  # the cluster runs on
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _session_processes(head.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(temp, ignore_errors=True)
    assert not _session_processes(head.pid)


@pytest.mark.docker
def test_a_worker_that_cannot_open_its_sandbox_fails_the_run_saying_why(tmp_path):
    """Fail closed: a sandbox that cannot start on a Ray worker (here: an image nobody has) is an
    error of the run, naming the cause; no Ray worker is left behind."""
    ops = {"raw_programs": {"config": {"generator_count": 10, "generator_seed": 13}},
           "execution_traces": {"config": {"num_shards": 2}}}
    result = dg.materialize(
        DATA_ASSETS[:3],
        resources={"store": ArtifactStore(root=str(tmp_path)), "trace_runner": ray_runner(),
                   "sandbox": SandboxResource(backend="docker", docker_image="stepcode-no-such-image:0"),
                   "benchmark_files": BenchmarkFiles()},
        run_config={"ops": ops}, raise_on_error=False,
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.event_specific_data.error.to_string()
    assert "ShardWorker" in message and "stepcode-no-such-image" in message, message[-3000:]
    assert not _shard_worker_pids()
    assert not (tmp_path / "execution_traces").exists()
