"""The instances' run queue and pool limits: what dagster.yaml and deploy/dagster.yaml configure is
what the loaded instance enforces, and a real dagster-daemon on the PostgreSQL deployment drains its
queue of project runs while the `gpu` pool admits one GPU step at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.dagster_run import FINISHED_STATUSES

from pipelines.processes import stop_process_group

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).with_name("dagster"))
DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))


def _configured() -> dict:
    """The concurrency block of the dagster.yaml the fixture's instance was loaded from."""
    return yaml.safe_load((Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").read_text())["concurrency"]


def test_the_instance_queues_runs_and_limits_the_gpu_pool(dagster_instance):
    instance = dagster_instance
    configured = _configured()
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    config = instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == configured["runs"]["max_concurrent_runs"]
    assert config.pool_config.default_pool_limit == configured["pools"]["default_limit"] == 1

    # The storage enforces it: a second run's GPU step is refused the slot until the first frees it.
    storage = instance.event_log_storage
    assert storage.supports_global_concurrency_limits
    storage.initialize_concurrency_limit_to_default("gpu")
    assert storage.get_concurrency_info("gpu").slot_count == 1
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert storage.claim_concurrency_slot("gpu", first, "sft_checkpoint").is_claimed
    assert not storage.claim_concurrency_slot("gpu", second, "eval_cruxeval").is_claimed
    storage.free_concurrency_slots_for_run(first)
    assert storage.claim_concurrency_slot("gpu", second, "eval_cruxeval").is_claimed


IN_ONE_PROCESS = {"execution": {"config": {"in_process": {}}}}  # a run process, not one per step


def _launch(runs: list[tuple[str, dict]]) -> list[str]:
    """Submit runs the way a person does from a terminal, through the instance's run coordinator
    (`dagster job launch`, side by side: each loads the code location)."""
    run_ids = [uuid.uuid4().hex for _ in runs]
    launches = [subprocess.Popen([DAGSTER, "job", "launch", "-m", "pipelines.definitions", "-j", job, "--run-id", run_id,
                                  "--config-json", json.dumps({**IN_ONE_PROCESS, **run_config})],
                                 cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for (job, run_config), run_id in zip(runs, run_ids)]
    for launch in launches:
        output, _ = launch.communicate(timeout=180)
        assert launch.returncode == 0, output[-3000:]
    return run_ids


def _status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def _wait(instance, run_ids: list[str], until, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(until(_status(instance, run_id)) for run_id in run_ids):
            return
        time.sleep(0.5)
    pytest.fail(f"{what} within {timeout:.0f} s: " + ", ".join(str(_status(instance, r)) for r in run_ids))


def _step_interval(instance, run_id: str, step: str) -> tuple[float, float]:
    events = instance.all_logs(run_id)
    start = next(e.timestamp for e in events if e.step_key == step and e.dagster_event_type == dg.DagsterEventType.STEP_START)
    end = next(e.timestamp for e in events if e.step_key == step and e.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS)
    return start, end


@pytest.mark.postgres
def test_the_daemon_drains_the_queue_within_the_gpu_pool(deploy_instance, tmp_path, monkeypatch):
    instance = deploy_instance
    # The code location's local resources, under this test's folder; no Docker needed.
    monkeypatch.setenv("STEPCODE_HOME", str(tmp_path / "stepcode_home"))
    monkeypatch.setenv("STEPCODE_SANDBOX_BACKEND", "local")

    # Another run's GPU step holds the only `gpu` slot.
    instance.event_log_storage.initialize_concurrency_limit_to_default("gpu")
    holder = uuid.uuid4().hex
    assert instance.event_log_storage.claim_concurrency_slot("gpu", holder, "grpo_checkpoint").is_claimed

    data_config = {"ops": {"raw_programs": {"config": {"generator_count": 30, "generator_seed": 1}},
                           "execution_traces": {"config": {"num_shards": 1}}}}
    # eval_report takes the gpu pool; the data stages take no pool.
    *reports, data = _launch([("eval_report_job", {}), ("eval_report_job", {}), ("data_refresh", data_config)])
    # Without a daemon nothing leaves the queue: the coordinator queued them, it did not launch them.
    assert [_status(instance, run_id) for run_id in (*reports, data)] == [dg.DagsterRunStatus.QUEUED] * 3

    daemon = subprocess.Popen([DAEMON, "run", "-m", "pipelines.definitions"], cwd=PROJECT_ROOT,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=(tmp_path / "daemon.log").open("w"))
    try:
        # The data run needs no GPU: it goes ahead while the reports wait for the slot.
        _wait(instance, [data], lambda status: status in FINISHED_STATUSES, 240, "the data run did not finish")
        assert _status(instance, data) == dg.DagsterRunStatus.SUCCESS
        assert [_status(instance, run_id) for run_id in reports] == [dg.DagsterRunStatus.QUEUED] * 2

        instance.event_log_storage.free_concurrency_slots_for_run(holder)
        _wait(instance, reports, lambda status: status in FINISHED_STATUSES, 240, "the report runs did not finish")
        assert [_status(instance, run_id) for run_id in reports] == [dg.DagsterRunStatus.SUCCESS] * 2
        # One GPU step at a time: the two reports ran one after the other.
        (start_a, end_a), (start_b, end_b) = sorted(_step_interval(instance, run_id, "eval_report") for run_id in reports)
        assert end_a <= start_b
    finally:
        stop_process_group(daemon, grace_s=30)
