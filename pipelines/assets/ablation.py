"""The ablation in miniature (group ``ablation``, job ``ablation``): GRPO's reward modes compared
over seeds from one warm start.

``ablation_tasks`` (the tiny trace task, traced in the sandbox) → ``ablation_base`` (a tiny random
Llama, or a real model) → ``ablation_start`` (its SFT warm start) → ``ablation_checkpoint``
(partitioned by mode × seed: one GRPO run each, a cached checkpoint with its held-out numbers) →
``ablation_report`` (``ablation.json`` and ``ablation.png``). The preset chooses the scale: the
default ``tiny-ablation`` runs on a CPU; ``ablation_base``'s ``model`` and the ``paper`` preset run a
real model on GPUs.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.assets.training import _settings, _train
from pipelines.launchers import TrainingLauncher
from pipelines.resources import SandboxResource
from pipelines.storage import (
    ArtifactRef,
    ArtifactStore,
    cached_output,
    png_markdown,
    recorded_artifact,
)
from pipelines.versions import code_version
from stepcode_core.models import ModelError, materialize_embedded_model, weights_hash
from stepcode_core.training import ablation
from stepcode_core.training.advantages import MODES
from stepcode_core.training.tiny_task import tiny_model, tiny_task_rows, write_task_dataset

TASKS_VERSION = code_version(__name__, "ablation_tasks")
BASE_VERSION = code_version(__name__, "ablation_base")
START_VERSION = code_version(__name__, "ablation_start")
RUN_VERSION = code_version(__name__, "ablation_checkpoint")
REPORT_VERSION = code_version(__name__, "ablation_report")

SEEDS = ("0", "1", "2", "3", "4")  # five: enough for Welch intervals on the ranking
ABLATION_PARTITIONS = dg.MultiPartitionsDefinition({
    "mode": dg.StaticPartitionsDefinition(list(MODES)),
    "seed": dg.StaticPartitionsDefinition(list(SEEDS)),
})


class AblationTasksConfig(dg.Config):
    train_tasks: int = Field(default=512, description="training tasks of the tiny trace task")
    held_out_tasks: int = Field(default=64, description="held-out tasks every run is scored on")
    seed: int = Field(default=1, description="seed of the tasks' programs")


class AblationBaseConfig(dg.Config):
    model: str = Field(default="tiny", description="tiny (a 2-layer Llama with a BPE trained on the tasks), "
                       "embedded (SmolLM2-135M) or a local Hugging Face folder")
    seed: int = Field(default=0, description="the tiny model's initial weights")


class AblationTrainingConfig(dg.Config):
    preset: str = Field(default="tiny-ablation", description="tiny-ablation (CPU), or paper / cpu-demo with a real model")
    overrides_json: str = Field(default="", description='TrainSettings fields as JSON, e.g. {"grpo_steps": 50}')


@dg.asset(group_name="ablation", code_version=TASKS_VERSION)
def ablation_tasks(context: dg.AssetExecutionContext, config: AblationTasksConfig, store: ArtifactStore,
                   sandbox: SandboxResource) -> dg.Output:
    """The tiny trace task (one assignment, then the return) traced in the sandbox, in the trace
    dataset's layout: ``train_tasks`` to train on, ``held_out_tasks`` distinct programs to score."""
    if config.train_tasks < 1 or config.held_out_tasks < 1:
        raise dg.Failure("train_tasks and held_out_tasks must be at least 1")

    def write(folder: Path) -> dict:
        with sandbox.open() as sb:
            rows = tiny_task_rows(config.train_tasks + config.held_out_tasks, config.seed, sb)
        for row in rows[config.train_tasks:]:
            row["split"] = "val"
        write_task_dataset(folder, rows[: config.train_tasks], rows[config.train_tasks:])
        return {"train_tasks": config.train_tasks, "held_out_tasks": config.held_out_tasks,
                "example_prompt": rows[0]["prompt"], "example_reference": rows[0]["reference"]}

    return cached_output(context, store, TASKS_VERSION, config.model_dump(), [], write,
                         lambda ref, meta, reused: {
                             "train_tasks": meta["train_tasks"], "held_out_tasks": meta["held_out_tasks"],
                             "example": dg.MetadataValue.md(f"```\n{meta['example_prompt']}\n---\n"
                                                            f"{meta['example_reference']}\n```")})


@dg.asset(group_name="ablation", code_version=BASE_VERSION, pool="gpu")
def ablation_base(context: dg.AssetExecutionContext, config: AblationBaseConfig, store: ArtifactStore,
                  ablation_tasks: ArtifactRef) -> dg.Output:
    """The model the warm start trains: a tiny random Llama whose tokenizer is SmolLM2's retrained
    on the tasks' texts (a function of the tasks and the seed), or a real model's folder."""
    if config.model != "tiny":
        try:
            folder = (materialize_embedded_model(store.models_path()) if config.model == "embedded"
                      else Path(config.model).expanduser().resolve())
        except ModelError as exc:
            raise dg.Failure(str(exc)) from exc
        if not (folder / "config.json").is_file():
            raise dg.Failure(f"{folder} is not a Hugging Face model folder (no config.json)")
        digest = weights_hash(folder)
        return dg.Output(ArtifactRef("ablation_base", digest, str(folder), digest), data_version=dg.DataVersion(digest),
                         metadata={"model_dir": dg.MetadataValue.path(str(folder)), "weights_hash": digest})

    def write(folder: Path) -> dict:
        import pyarrow.parquet as pq

        tasks = pq.read_table(ablation_tasks.file("tasks/train.parquet")).to_pylist()
        corpus = [row["prompt"] + "\n" + row["reference"] for row in tasks]
        tokenizer_source = materialize_embedded_model(store.models_path())
        tiny_model(folder / "model", tokenizer_source, corpus, seed=config.seed)
        return {"weights_hash": weights_hash(folder / "model"), "parameters": _parameters(folder / "model")}

    output = cached_output(context, store, BASE_VERSION, config.model_dump(), [ablation_tasks], write,
                           lambda ref, meta, reused: {"model_dir": dg.MetadataValue.path(str(ref.file("model"))),
                                                      "weights_hash": meta["weights_hash"],
                                                      "parameters": meta["parameters"]})
    ref = output.value
    model_ref = ArtifactRef("ablation_base", ref.cache_key, str(ref.file("model")), ref.content_hash)
    return dg.Output(model_ref, data_version=output.data_version, metadata=output.metadata)


def _parameters(folder: Path) -> int:
    config = json.loads((folder / "config.json").read_text())
    hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    return vocab * hidden + layers * (4 * hidden * hidden + 3 * hidden * config["intermediate_size"])


@dg.asset(group_name="ablation", code_version=START_VERSION, pool="gpu")
def ablation_start(context: dg.AssetExecutionContext, config: AblationTrainingConfig, store: ArtifactStore,
                   sandbox: SandboxResource, training_launcher: TrainingLauncher, ablation_base: ArtifactRef,
                   ablation_tasks: ArtifactRef) -> dg.Output:
    """The warm start every GRPO run begins from: SFT on the tasks (``tiny-ablation``: stopped while
    copying values is half learned, so a group's samples disagree and GRPO has room), scored on the
    held-out tasks."""
    settings = _settings(config, {})
    return _train(context, store, sandbox, training_launcher, START_VERSION, settings, ablation_base,
                  ablation_base.path, ablation_tasks, "sft")


@dg.asset(group_name="ablation", code_version=RUN_VERSION, partitions_def=ABLATION_PARTITIONS, pool="gpu")
def ablation_checkpoint(context: dg.AssetExecutionContext, config: AblationTrainingConfig, store: ArtifactStore,
                        sandbox: SandboxResource, training_launcher: TrainingLauncher, ablation_start: ArtifactRef,
                        ablation_tasks: ArtifactRef) -> dg.Output:
    """One GRPO run: the partition's reward mode and seed, from ``ablation_start``; a cached
    checkpoint with its held-out step and final accuracy."""
    keys = context.partition_key.keys_by_dimension
    settings = _settings(config, {}, grpo_mode=keys["mode"], seed=int(keys["seed"]))
    return _train(context, store, sandbox, training_launcher, RUN_VERSION, settings, ablation_start,
                  str(ablation_start.file("model")), ablation_tasks, "grpo")


def _held_out(record) -> dict | None:
    """The held-out numbers a training artifact stored."""
    found = recorded_artifact(record)
    if found is None:
        return None
    _, stored = found
    return {**stored["held_out"], "settings": stored["settings"], "weights_hash": stored["weights_hash"]}


@dg.asset(group_name="ablation", code_version=REPORT_VERSION, deps=["ablation_checkpoint", "ablation_start"])
def ablation_report(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.Output:
    """Held-out step accuracy, final accuracy and their gap per mode, mean and std over the seeds
    run so far, beside the warm start: ``ablation.json`` and ``ablation.png``."""
    instance = context.instance
    runs = []
    for key in ABLATION_PARTITIONS.get_partition_keys():
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("ablation_checkpoint"), asset_partitions=[key]), limit=1).records
        found = _held_out(records[0]) if records else None
        if found and found.get("step_accuracy") is not None:
            runs.append({"mode": key.keys_by_dimension["mode"], "seed": int(key.keys_by_dimension["seed"]),
                         "at": records[0].timestamp, **found})
    runs, other_settings = ablation.with_common_settings(runs)
    if not runs:
        raise dg.Failure("no ablation_checkpoint partition has been materialized yet")
    start_records = instance.fetch_materializations(dg.AssetKey("ablation_start"), limit=1).records
    start = _held_out(start_records[0]) if start_records else None
    summary = ablation.summarize(runs, {k: start[k] for k in ("step_accuracy", "final_accuracy") if k in start}
                                 if start else None)
    settings = runs[0]["settings"]
    summary.update({"preset": settings["name"], "grpo_steps": settings["grpo_steps"],
                    "held_out_tasks": settings["eval_tasks"], "samples_per_task": settings["eval_num_samples"],
                    "runs": len(runs), "left_out_other_settings": other_settings,
                    "weights": {f"{r['mode']}|{r['seed']}": r["weights_hash"] for r in runs}})
    # The runs' numbers are the inputs: the same set of runs reuses the report.
    digest = hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:20]
    inputs = [ArtifactRef("ablation_runs", digest, "", digest)]

    def write(folder: Path) -> dict:
        (folder / "ablation.json").write_text(json.dumps(summary, indent=1))
        ablation.plot(summary, folder / "ablation.png", f"GRPO reward modes, {settings['name']} "
                      f"({settings['grpo_steps']} steps; mean ± std over seeds)")
        return {"lines": ablation.describe(summary), "runs": len(runs)}

    return cached_output(context, store, REPORT_VERSION, {}, inputs, write, lambda ref, meta, reused: {
        "runs": meta["runs"], "summary": dg.MetadataValue.md("\n".join(f"- {line}" for line in meta["lines"])),
        "plot": png_markdown(ref.file("ablation.png"), "ablation"),
        "ablation_json": dg.MetadataValue.path(str(ref.file("ablation.json")))})

