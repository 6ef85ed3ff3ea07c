"""The training assets through Dagster: sft_checkpoint and grpo_checkpoint on a tiny config, their
metadata (model_dir, curves, weights-hash DataVersion), and the cache: a second materialization of
the unchanged graph trains nothing."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import training
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import MlflowTracking, SandboxResource
from pipelines.storage import ArtifactStore
from stepcode_core.models import weights_hash

RUN_CONFIG = {"ops": {
    "sft_checkpoint": {"config": {"preset": "cpu-smoke", "max_tasks": 8, "eval_tasks": 2, "overrides_json": '{"sft_batch_size": 8, "eval_max_tokens": 24}'}},
    "grpo_checkpoint": {"config": {"preset": "cpu-smoke", "steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_response_tokens": 24,
                                   "eval_tasks": 2, "overrides_json": '{"eval_max_tokens": 24}'}},
}}


def _materialize(root, tiny_trace_dataset, instance=None):
    return dg.materialize(
        [training.base_model, tiny_trace_dataset, training.sft_checkpoint, training.grpo_checkpoint],
        resources={"store": ArtifactStore(root=str(root)), "sandbox": SandboxResource(backend="local", workers=2),
                   "training_launcher": LocalTrainingLauncher(), "mlflow_tracking": MlflowTracking()},
        run_config=RUN_CONFIG,
        instance=instance,
    )


def _materialization(result, asset):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.step_materialization_data.materialization


@pytest.mark.slow
def test_checkpoints_materialize_then_reuse(tmp_path, tiny_trace_dataset, dagster_instance):
    store = tmp_path / "store"
    first = _materialize(store, tiny_trace_dataset, dagster_instance)
    assert first.success
    for asset in ("sft_checkpoint", "grpo_checkpoint"):
        materialization = _materialization(first, asset)
        meta = materialization.metadata
        model_dir = Path(meta["model_dir"].value)
        assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer_config.json").is_file()
        assert meta["reused"].value is False
        assert materialization.tags["dagster/data_version"] == weights_hash(model_dir) == meta["weights_hash"].value
        assert meta["curves"].value.startswith("![") and "data:image/png;base64," in meta["curves"].value
        assert 0.0 <= meta["held_out_step_accuracy"].value <= 1.0
        assert meta["preset"].value == "cpu-smoke"
    grpo = _materialization(first, "grpo_checkpoint").metadata
    assert grpo["training"].data["steps"] == 1 and grpo["training"].data["mode"] == "bilevel"
    # SFT moved the weights away from the base model's (one GRPO step may not: a group whose rewards
    # are all equal has zero advantage everywhere)
    assert _materialization(first, "base_model").metadata["weights_hash"].value != \
        _materialization(first, "sft_checkpoint").metadata["weights_hash"].value

    started = time.perf_counter()
    second = _materialize(store, tiny_trace_dataset, dagster_instance)
    assert second.success and time.perf_counter() - started < 60
    for asset in ("sft_checkpoint", "grpo_checkpoint"):
        again, before = _materialization(second, asset), _materialization(first, asset)
        assert again.metadata["reused"].value is True
        assert again.tags["dagster/data_version"] == before.tags["dagster/data_version"]
        assert again.metadata["model_dir"].value == before.metadata["model_dir"].value
        # The instance recorded both materializations, the latest with the same data version.
        records = dagster_instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
        assert [r.asset_materialization.tags["dagster/data_version"] for r in records] == \
            [before.tags["dagster/data_version"]] * 2


def test_config_overrides_and_errors():
    config = training.GRPOCheckpointConfig(mode="terminal", steps=3, overrides_json='{"seed": 4}')
    settings = training._settings(config, training._GRPO_FIELDS)
    assert (settings.grpo_mode, settings.grpo_steps, settings.seed, settings.name) == ("terminal", 3, 4, "cpu-demo")
    with pytest.raises(dg.Failure, match="grpo_mode"):
        training._settings(training.GRPOCheckpointConfig(mode="ppo"), training._GRPO_FIELDS)
    with pytest.raises(dg.Failure, match="unknown training settings"):
        training._settings(training.GRPOCheckpointConfig(overrides_json='{"nope": 1}'), training._GRPO_FIELDS)
    with pytest.raises(dg.Failure, match="unknown preset"):
        training._settings(training.SFTCheckpointConfig(preset="huge"), training._SFT_FIELDS)


def test_every_training_and_evaluation_asset_takes_the_gpu_pool():
    from pipelines.definitions import defs

    def pool(asset):  # a graph-backed asset's pool is that of its ops
        return asset.op.pool if isinstance(asset.node_def, dg.OpDefinition) else \
            ",".join(sorted({op.pool or "" for op in asset.node_def.iterate_op_defs()})) or None

    pools = {key.to_user_string(): (asset.group_names_by_key[key], pool(asset)) for asset in defs.assets for key in asset.keys}
    chosen = {name: pool for name, (group, pool) in pools.items() if group in ("training", "evaluation")}
    assert {"base_model", "sft_checkpoint", "grpo_checkpoint", "eval_cruxeval", "eval_livecodebench", "eval_reval",
            "eval_trace_gap", "eval_report"} <= set(chosen)
    assert set(chosen.values()) == {"gpu"}, chosen
    assert not any(pool for group, pool in pools.values() if group == "data")  # the data stages run side by side


def test_the_instance_runs_one_gpu_asset_at_a_time():
    import yaml

    instance = yaml.safe_load((Path(__file__).resolve().parents[2] / "dagster.yaml").read_text())
    assert instance["concurrency"]["pools"]["default_limit"] == 1
