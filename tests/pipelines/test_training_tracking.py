"""Training curves where ML people look: the TensorBoard event files beside each checkpoint and the
optional MLflow run, read back and checked against the checkpoint's own ``curves.json`` and
held-out numbers. Real (tiny) training through the real child process; nothing is mocked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import training
from pipelines.deployments import resources_for
from pipelines.launchers import REPO_ROOT, LocalTrainingLauncher
from pipelines.resources import MlflowTracking, SandboxResource
from pipelines.storage import UNHASHED_DIRS, ArtifactRef, ArtifactStore, hash_files
from stepcode_core.models import weights_hash
from stepcode_core.training.tracking import TENSORBOARD_DIR

SFT_CONFIG = {"preset": "cpu-smoke", "max_tasks": 8, "eval_tasks": 2,
              "overrides_json": '{"sft_batch_size": 4, "eval_max_tokens": 16}'}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, tiny_trace_dataset) -> Path:
    """The tiny trace task in trace_dataset's layout, built once for the module."""
    store = ArtifactStore(root=str(tmp_path_factory.mktemp("dataset")))
    result = dg.materialize([tiny_trace_dataset], resources={"store": store, "sandbox": SandboxResource(backend="local")})
    return Path(result.output_for_node("trace_dataset").path)


def _scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every event
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _expected(curves: list[dict], held_out: dict, last_step: int) -> dict[str, list[tuple[int, float]]]:
    """What the event files must hold: each curve quantity per logged step, the held-out numbers at the end."""
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in curves:
        for key, value in row.items():
            if key != "step":
                expected.setdefault(f"train/{key}", []).append((row["step"], value))
    expected.update({f"held_out/{key}": [(last_step, value)] for key, value in held_out.items()})
    return expected


def _assert_same(found: dict, expected: dict) -> None:
    assert set(found) == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in found[tag]] == [step for step, _ in points], tag
        assert [value for _, value in found[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def _stand_in_dataset(folder: Path):
    @dg.asset(name="trace_dataset", group_name="data")
    def trace_dataset() -> dg.Output:
        return dg.Output(ArtifactRef("trace_dataset", "tiny", str(folder), "tiny-v1"), data_version=dg.DataVersion("tiny-v1"))

    return trace_dataset


def test_sft_checkpoint_logs_to_tensorboard_and_mlflow(tmp_path, dataset_dir, tiny_checkpoint):
    """MLflow on: the event files and the MLflow run hold the curves and the held-out numbers, the run
    carries the settings and the artifact key; the events change no hash; a reused checkpoint still
    links both, and logs no second run."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = tiny_checkpoint(tmp_path / "base", seed=0)

    def materialize():
        result = dg.materialize(
            [training.base_model, _stand_in_dataset(dataset_dir), training.sft_checkpoint],
            resources={"store": ArtifactStore(root=str(tmp_path / "store")), "sandbox": SandboxResource(backend="local"),
                       "training_launcher": LocalTrainingLauncher(),
                       "mlflow_tracking": MlflowTracking(tracking_uri=uri, experiment="tracking-test")},
            run_config={"ops": {"base_model": {"config": {"source": str(base)}}, "sft_checkpoint": {"config": SFT_CONFIG}}},
        )
        (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.path == ["sft_checkpoint"]]
        materialization = event.step_materialization_data.materialization
        return materialization, {key: getattr(value, "value", value) for key, value in materialization.metadata.items()}

    materialization, meta = materialize()
    folder = Path(meta["artifact"])
    logdir = Path(meta["tensorboard_logdir"])
    assert logdir == folder / TENSORBOARD_DIR and meta["tensorboard_command"] == f"tensorboard --logdir {logdir}"
    curves = json.loads((folder / "curves.json").read_text())
    held_out = {key.removeprefix("held_out_"): value for key, value in meta.items() if key.startswith("held_out_")}
    steps = meta["training"]["steps"]
    assert len(curves) == steps >= 2 and {"loss", "learning_rate"} <= set(curves[-1])
    assert {"step_accuracy", "final_accuracy"} <= set(held_out)
    _assert_same(_scalars(logdir), _expected(curves, held_out, steps))

    # The event files are not content: the artifact's hash and the checkpoint's version ignore them.
    assert TENSORBOARD_DIR in UNHASHED_DIRS
    ref = ArtifactStore(root=str(tmp_path / "store")).lookup("sft_checkpoint", meta["cache_key"])
    assert hash_files(folder) == ref.content_hash
    (logdir / "events.out.tfevents.later").write_bytes(b"a viewer's later writes")
    assert hash_files(folder) == ref.content_hash
    assert materialization.tags["dagster/data_version"] == meta["weights_hash"] == weights_hash(folder / "model")

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(meta["mlflow_run_id"])
    assert run.info.status == "FINISHED" and meta["mlflow_experiment"] == "tracking-test"
    assert meta["mlflow_tracking_uri"] == uri and "mlflow_run_url" not in meta  # no UI link for a sqlite store
    assert run.data.tags["stepcode.artifact_key"] == meta["cache_key"] == folder.name
    assert run.data.tags["stepcode.asset"] == "sft_checkpoint" and run.data.tags["stepcode.phase"] == "sft"
    assert run.data.params == {key: str(value) for key, value in meta["settings"].items()}
    logged = {tag: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag)] for tag in run.data.metrics}
    _assert_same(logged, _expected(curves, held_out, steps))

    again, reused = materialize()
    assert reused["reused"] is True
    assert reused["tensorboard_logdir"] == meta["tensorboard_logdir"] and reused["mlflow_run_id"] == meta["mlflow_run_id"]
    assert again.tags["dagster/data_version"] == materialization.tags["dagster/data_version"]
    assert len(client.search_runs([run.info.experiment_id])) == 1


OFF_SCRIPT = """
import json, sys
from pipelines.deployments import resources_for
from pipelines.training_child import train

tracking = resources_for("local")["mlflow_tracking"]
report = {"uri": tracking.tracking_uri, "options": tracking.child_options({"stepcode.asset": "sft_checkpoint"})}
for extras in json.loads(sys.argv[1]):
    report[extras["phase"]] = train(extras)
    report[extras["phase"] + "_imported_mlflow"] = any(name.split(".")[0] == "mlflow" for name in sys.modules)
print(json.dumps(report))
"""


def test_mlflow_off_logs_nothing_and_grpo_events_time_the_rollout(tmp_path, dataset_dir, tiny_checkpoint):
    """The default deployment (no $STEPCODE_MLFLOW_TRACKING_URI), in a fresh process as the launcher
    starts one: SFT then GRPO write their event files (GRPO's with the rollout time) and log nothing
    to MLflow, not even where $MLFLOW_TRACKING_URI points; SFT never imports mlflow. (TRL's GRPO
    trainer imports mlflow itself when it is installed, trl.extras.profiling, and logs nothing
    unless report_to names it.)"""
    base = tiny_checkpoint(tmp_path / "base", seed=1)
    settings = {"name": "tracking-test", "train_top_layers": 0, "sft_max_tasks": 4, "sft_batch_size": 4,
                "grpo_steps": 2, "grpo_prompts_per_step": 1, "grpo_num_generations": 2, "grpo_max_response_tokens": 12,
                "grpo_max_tasks": 4, "eval_tasks": 2, "eval_max_tokens": 12, "torch_threads": 1}
    common = {"dataset": str(dataset_dir), "settings": settings, "sandbox": {"backend": "local", "workers": 1}}
    runs = [{"phase": "sft", "model_dir": str(base), "out": str(tmp_path / "sft"), **common},
            {"phase": "grpo", "model_dir": str(tmp_path / "sft" / "model"), "out": str(tmp_path / "grpo"), **common}]
    env = {key: value for key, value in os.environ.items() if key != "STEPCODE_MLFLOW_TRACKING_URI"}
    env.update(MLFLOW_TRACKING_URI=(tmp_path / "mlruns").as_uri(), PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", OFF_SCRIPT, json.dumps(runs)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["uri"] == "" and report["options"] is None and not report["sft_imported_mlflow"]
    assert "mlflow" not in report["sft"] and "mlflow" not in report["grpo"]
    assert not (tmp_path / "mlruns").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["base", "grpo", "sft"]

    for phase in ("sft", "grpo"):
        out, meta = tmp_path / phase, report[phase]
        curves = json.loads((out / "curves.json").read_text())
        _assert_same(_scalars(out / TENSORBOARD_DIR), _expected(curves, meta["held_out"], meta["metrics"]["steps"]))
    grpo_curves = json.loads((tmp_path / "grpo" / "curves.json").read_text())
    assert len(grpo_curves) == 2 and all({"rollout_s", "reward", "learning_rate"} <= set(row) for row in grpo_curves)


def test_the_deployments_read_the_mlflow_variables(monkeypatch):
    for deployment in ("local", "production"):
        monkeypatch.delenv("STEPCODE_MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv("STEPCODE_MLFLOW_EXPERIMENT", raising=False)
        off = resources_for(deployment)["mlflow_tracking"]
        assert (off.tracking_uri, off.experiment, off.child_options({})) == ("", "stepcode", None)
        monkeypatch.setenv("STEPCODE_MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
        monkeypatch.setenv("STEPCODE_MLFLOW_EXPERIMENT", "paper-runs")
        on = resources_for(deployment)["mlflow_tracking"]
        assert on.child_options({"k": "v"}, "run") == {"tracking_uri": "http://mlflow.internal:5000",
                                                      "experiment": "paper-runs", "tags": {"k": "v"}, "run_name": "run"}
