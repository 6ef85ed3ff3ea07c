"""The training assets through Dagster: sft_checkpoint and grpo_checkpoint on a tiny config, their
metadata (model_dir, curves, weights-hash DataVersion), and the cache: a second materialization of
the unchanged graph trains nothing."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.assets import training
from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactRef, ArtifactStore
from stepcode_core.models import weights_hash
from stepcode_core.tiny_tasks import tiny_task_rows


@dg.asset(name="trace_dataset", group_name="data")
def tiny_trace_dataset(store: ArtifactStore, sandbox: SandboxResource) -> dg.Output:
    """Stands in for the data stages: the small trace task, in trace_dataset's layout."""
    folder = Path(store.root_path()) / "tiny_trace_dataset"
    if not (folder / "tasks" / "val.parquet").is_file():
        (folder / "tasks").mkdir(parents=True, exist_ok=True)
        with sandbox.open() as opened:
            rows = tiny_task_rows(12, 5, opened, kinds=("output", "input"))
        for split, part in (("train", rows[:20]), ("val", rows[20:])):
            pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k not in ("code", "policy")} for r in part]),
                           folder / "tasks" / f"{split}.parquet")
            programs = {r["program_id"]: {"program_id": r["program_id"], "code": r["code"]} for r in part}
            pq.write_table(pa.Table.from_pylist(list(programs.values())), folder / f"{split}.parquet")
    return dg.Output(ArtifactRef("trace_dataset", "tiny", str(folder), "tiny-v1"), data_version=dg.DataVersion("tiny-v1"))


RUN_CONFIG = {"ops": {
    "sft_checkpoint": {"config": {"max_tasks": 8, "eval_tasks": 2, "overrides_json": '{"sft_batch_size": 8, "eval_max_tokens": 24}'}},
    "grpo_checkpoint": {"config": {"steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_response_tokens": 24,
                                   "eval_tasks": 2, "overrides_json": '{"eval_max_tokens": 24}'}},
}}


def _materialize(root):
    return dg.materialize(
        [training.base_model, tiny_trace_dataset, training.sft_checkpoint, training.grpo_checkpoint],
        resources={"store": ArtifactStore(root=str(root)), "sandbox": SandboxResource(backend="local", workers=2)},
        run_config=RUN_CONFIG,
    )


def _materialization(result, asset):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.step_materialization_data.materialization


@pytest.mark.slow
def test_checkpoints_materialize_then_reuse(tmp_path):
    first = _materialize(tmp_path)
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
    second = _materialize(tmp_path)
    assert second.success and time.perf_counter() - started < 60
    for asset in ("sft_checkpoint", "grpo_checkpoint"):
        again, before = _materialization(second, asset), _materialization(first, asset)
        assert again.metadata["reused"].value is True
        assert again.tags["dagster/data_version"] == before.tags["dagster/data_version"]
        assert again.metadata["model_dir"].value == before.metadata["model_dir"].value


def test_config_overrides_and_errors():
    config = training.GRPOCheckpointConfig(mode="terminal", steps=3, overrides_json='{"seed": 4}')
    settings = training._settings(config, training._GRPO_FIELDS)
    assert (settings.grpo_mode, settings.grpo_steps, settings.seed, settings.name) == ("terminal", 3, 4, "cpu-smoke")
    with pytest.raises(dg.Failure, match="grpo_mode"):
        training._settings(training.GRPOCheckpointConfig(mode="ppo"), training._GRPO_FIELDS)
    with pytest.raises(dg.Failure, match="unknown training settings"):
        training._settings(training.GRPOCheckpointConfig(overrides_json='{"nope": 1}'), training._GRPO_FIELDS)
    with pytest.raises(dg.Failure, match="unknown preset"):
        training._settings(training.SFTCheckpointConfig(preset="huge"), training._SFT_FIELDS)


def test_assets_declare_the_gpu_pool_and_group():
    for asset in (training.sft_checkpoint, training.grpo_checkpoint):
        assert asset.group_names_by_key[asset.key] == "training"
        assert asset.op.pool == "gpu"
