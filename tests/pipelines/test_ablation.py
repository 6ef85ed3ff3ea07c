"""The ablation job in small: the tiny task traced in the sandbox, a tiny random Llama, its SFT warm
start, GRPO runs partitioned by mode x seed through the training launcher, and ablation_report's
ablation.json and plot; a finished run is reused, a new seed only adds its own run."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import ablation
from pipelines.jobs import ablation_job
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactStore

SMALL = {
    "ablation_tasks": {"config": {"train_tasks": 96, "held_out_tasks": 8}},
    "ablation_start": {"config": {"overrides_json": json.dumps({"sft_epochs": 3.0, "eval_tasks": 8, "eval_num_samples": 2})}},
    "ablation_checkpoint": {"config": {"overrides_json": json.dumps({"grpo_steps": 2, "eval_tasks": 8,
                                                                      "eval_num_samples": 2})}},
}


def _key(mode: str, seed: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"mode": mode, "seed": seed})


@pytest.mark.slow
def test_ablation_runs_modes_and_seeds_and_reports(tmp_path):
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "sandbox": SandboxResource(backend="local", workers=2),
                 "training_launcher": LocalTrainingLauncher(),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}
    defs = dg.Definitions(assets=dg.load_assets_from_modules([ablation]), jobs=[ablation_job], resources=resources)
    job = defs.resolve_job_def("ablation")
    assert set(ablation.ABLATION_PARTITIONS.get_partition_keys()) == {
        _key(mode, seed) for mode in ("terminal", "step", "bilevel") for seed in ("0", "1", "2", "3", "4")}
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        def run(mode: str, seed: str) -> dict:
            result = job.execute_in_process(instance=instance, partition_key=_key(mode, seed), run_config={"ops": SMALL})
            assert result.success
            return {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                    for e in result.get_asset_materialization_events()}

        first = run("terminal", "0")
        assert first["ablation_checkpoint"]["reused"].value is False
        assert first["ablation_checkpoint"]["training"].data["mode"] == "terminal"
        assert 0.0 <= first["ablation_start"]["held_out_step_accuracy"].value <= 1.0
        run("step", "0")
        last = run("bilevel", "0")
        assert last["ablation_start"]["reused"].value is True  # one warm start for every run
        summary = json.loads(Path(str(last["ablation_report"]["ablation_json"].value)).read_text())
        assert set(summary["modes"]) == {"terminal", "step", "bilevel"}
        for numbers in summary["modes"].values():
            assert numbers["seeds"] == [0]
            for metric in ("step_accuracy", "final_accuracy", "gap"):
                assert set(numbers[metric]) == {"mean", "std", "values"} and 0.0 <= abs(numbers[metric]["mean"]) <= 1.0
        assert summary["start"]["step_accuracy"] == pytest.approx(first["ablation_start"]["held_out_step_accuracy"].value)
        assert Path(str(last["ablation_report"]["ablation_json"].value)).with_name("ablation.png").stat().st_size > 0

        again = run("bilevel", "1")
        assert again["ablation_checkpoint"]["training"].data["mode"] == "bilevel"
        summary = json.loads(Path(str(again["ablation_report"]["ablation_json"].value)).read_text())
        assert summary["modes"]["bilevel"]["seeds"] == [0, 1] and summary["runs"] == 4
        assert run("terminal", "0")["ablation_checkpoint"]["reused"].value is True  # a finished run is cached
