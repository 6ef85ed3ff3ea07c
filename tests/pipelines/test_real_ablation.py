"""The real-model ablation's job in small: GRPO runs partitioned by mode x seed from an SFT
checkpoint, each scored task by task on the held-out trace split, and real_ablation_report's paired
intervals; a run from an earlier SFT checkpoint is left out of the report, not mixed in."""

# No `from __future__ import annotations`: Dagster reads the stand-in asset's config annotation.
import json
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import real_ablation
from pipelines.jobs import real_ablation_job
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactRef, ArtifactStore
from stepcode_core.models import weights_hash

SMALL = {
    "real_ablation_checkpoint": {"config": {"overrides_json": json.dumps({
        "grpo_steps": 1, "grpo_prompts_per_step": 1, "grpo_num_generations": 2, "grpo_max_response_tokens": 12,
        "train_top_layers": 0, "bf16": False})}},
    "real_ablation_start": {"config": {"limit": 0, "generation": {"max_new_tokens": 12}}},
    "real_ablation_scores": {"config": {"limit": 0, "generation": {"max_new_tokens": 12}}},
}


class StandInConfig(dg.Config):
    seed: int = 1


def _key(mode: str, seed: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({"mode": mode, "seed": seed})


@pytest.mark.slow
def test_runs_are_scored_per_task_and_compared_with_paired_intervals(tmp_path, tiny_trace_dataset, tiny_checkpoint):
    @dg.asset(name="sft_checkpoint", group_name="training")
    def sft_stand_in(config: StandInConfig, store: ArtifactStore) -> dg.Output:
        """A tiny one-layer Llama as the demo's SFT checkpoint; its seed decides its weights."""
        folder = Path(store.root_path()) / f"sft-{config.seed}"
        if not (folder / "model").is_dir():
            tiny_checkpoint(folder / "model", seed=config.seed)
        digest = weights_hash(folder / "model")
        return dg.Output(ArtifactRef("sft_checkpoint", digest, str(folder), digest), data_version=dg.DataVersion(digest))

    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "sandbox": SandboxResource(backend="local", workers=2),
                 "training_launcher": LocalTrainingLauncher(),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}
    defs = dg.Definitions(assets=[sft_stand_in, tiny_trace_dataset, *dg.load_assets_from_modules([real_ablation])],
                          jobs=[real_ablation_job], resources=resources)
    job = defs.resolve_job_def("real_ablation")
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        def run(mode: str, seed: str, sft_seed: int = 1) -> dict:
            config = {**SMALL, "sft_checkpoint": {"config": {"seed": sft_seed}}}
            result = job.execute_in_process(instance=instance, partition_key=_key(mode, seed), run_config={"ops": config},
                                            raise_on_error=False)
            assert result.success
            return {e.asset_key.to_user_string(): e.step_materialization_data.materialization.metadata
                    for e in result.get_asset_materialization_events()}

        first = run("terminal", "0")
        assert first["real_ablation_checkpoint"]["training"].data["mode"] == "terminal"
        samples = Path(str(first["real_ablation_scores"]["samples"].value))
        records = [json.loads(line) for line in samples.read_text().splitlines()]
        assert len(records) == first["real_ablation_scores"]["tasks"].value >= 2
        assert all({"task_id", "steps", "answer_right"} <= set(record) for record in records)

        last = run("bilevel", "0")
        assert last["real_ablation_start"]["reused"].value is True  # one warm start, scored once
        summary = json.loads(Path(str(last["real_ablation_report"]["ablation_json"].value)).read_text())
        assert set(summary["modes"]) == {"terminal", "bilevel"} and summary["runs"] == 2
        assert summary["tasks"] == len(records) and summary["grpo_steps"] == 1
        for numbers in summary["modes"].values():
            change = numbers["vs_start"]
            low, high = change["step_accuracy_change_ci"]
            assert low <= change["step_accuracy_change"] <= high
        (pair,) = summary["pairs"]
        assert (pair["from"], pair["to"]) == ("terminal", "bilevel")
        assert "bilevel - terminal: step accuracy" in last["real_ablation_report"]["summary"].value
        assert Path(str(last["real_ablation_report"]["ablation_json"].value)).with_name("ablation.png").stat().st_size > 0

        # A new SFT checkpoint: the runs trained from the old one are not its ablation.
        moved = run("step", "0", sft_seed=2)
        summary = json.loads(Path(str(moved["real_ablation_report"]["ablation_json"].value)).read_text())
        assert set(summary["modes"]) == {"step"} and summary["left_out_stale_runs"] == 2
