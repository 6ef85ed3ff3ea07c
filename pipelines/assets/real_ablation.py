"""The ablation on the real model (group ``real_ablation``, job ``real_ablation``): GRPO's reward
modes over seeds from the demo's SFT checkpoint, every run scored on the demo's held-out trace tasks.

``sft_checkpoint`` and ``trace_dataset`` (the demo's assets) → ``real_ablation_start`` (the warm
start scored on the held-out tasks, as ``eval_trace_gap`` scores a checkpoint) and
``real_ablation_checkpoint`` (partitioned by mode × seed: one GRPO run each, the demo's GRPO
settings but for the mode and the seed) → ``real_ablation_scores`` (each run scored the same way) →
``real_ablation_report`` (``ablation.json`` with paired 95% intervals, and ``ablation.png``).
``stepcode ablation --model smollm2`` runs every partition in turn.
"""

import hashlib
import json
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.assets.evaluation import TraceGapConfig, score_held_out, write_samples
from pipelines.assets.training import _settings, _train
from pipelines.launchers import TrainingLauncher
from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactRef, ArtifactStore, cached_output, png_markdown, recorded_artifact
from pipelines.versions import code_version
from stepcode_core.evaluation.trace_gap import trace_gap
from stepcode_core.training import ablation
from stepcode_core.training.advantages import MODES

START_VERSION = code_version(__name__, "real_ablation_start")
RUN_VERSION = code_version(__name__, "real_ablation_checkpoint")
SCORES_VERSION = code_version(__name__, "real_ablation_scores")
REPORT_VERSION = code_version(__name__, "real_ablation_report")


# Its own partitions (the miniature's, mode x seed): this module imports nothing of the miniature's,
# so that editing one ablation's code recomputes nothing of the other.
ABLATION_PARTITIONS = dg.MultiPartitionsDefinition({
    "mode": dg.StaticPartitionsDefinition(list(MODES)),
    "seed": dg.StaticPartitionsDefinition(["0", "1", "2"]),
})


class RealAblationTrainingConfig(dg.Config):
    preset: str = Field(default="cpu-demo", description="cpu-demo (the demo's own GRPO stage), or paper on GPUs")
    overrides_json: str = Field(default="", description='TrainSettings fields as JSON, e.g. {"grpo_steps": 24}')


def _scored(context: dg.AssetExecutionContext, config: TraceGapConfig, store: ArtifactStore, sandbox: SandboxResource,
            version: str, checkpoint: ArtifactRef, start: ArtifactRef, trace_dataset: ArtifactRef) -> dg.Output:
    """A checkpoint's ``samples.jsonl`` on the held-out trace tasks, with the warm start it came
    from (the report leaves out runs from another warm start)."""
    def write(folder: Path) -> dict:
        rows, responses, verdicts = score_held_out(context, config, sandbox, str(checkpoint.file("model")),
                                                   trace_dataset)
        write_samples(folder, rows, responses, verdicts)
        gap = trace_gap(verdicts)
        return {"weights_hash": checkpoint.content_hash, "start_weights_hash": start.content_hash, "tasks": len(rows),
                "step_accuracy": gap["step_accuracy"], "final_accuracy": gap["final_accuracy"]}

    return cached_output(context, store, version, config.model_dump(), [checkpoint, start, trace_dataset], write,
                         lambda ref, meta, reused: {
                             "tasks": meta["tasks"], "weights_hash": meta["weights_hash"],
                             "step_accuracy": meta["step_accuracy"], "final_accuracy": meta["final_accuracy"],
                             "samples": dg.MetadataValue.path(str(ref.file("samples.jsonl")))})


@dg.asset(group_name="real_ablation", code_version=START_VERSION, pool="gpu")
def real_ablation_start(context: dg.AssetExecutionContext, config: TraceGapConfig, store: ArtifactStore,
                        sandbox: SandboxResource, sft_checkpoint: ArtifactRef, trace_dataset: ArtifactRef) -> dg.Output:
    """The warm start every run begins from, the demo's SFT checkpoint, scored on the held-out trace
    tasks: the line each mode's change is measured from."""
    return _scored(context, config, store, sandbox, START_VERSION, sft_checkpoint, sft_checkpoint, trace_dataset)


@dg.asset(group_name="real_ablation", code_version=RUN_VERSION, partitions_def=ABLATION_PARTITIONS, pool="gpu")
def real_ablation_checkpoint(context: dg.AssetExecutionContext, config: RealAblationTrainingConfig,
                             store: ArtifactStore, sandbox: SandboxResource, training_launcher: TrainingLauncher,
                             sft_checkpoint: ArtifactRef, trace_dataset: ArtifactRef) -> dg.Output:
    """One GRPO run from the demo's SFT checkpoint: the partition's reward mode and seed."""
    keys = context.partition_key.keys_by_dimension
    settings = _settings(config, {}, grpo_mode=keys["mode"], seed=int(keys["seed"]))
    return _train(context, store, sandbox, training_launcher, RUN_VERSION, settings, sft_checkpoint,
                  str(sft_checkpoint.file("model")), trace_dataset, "grpo")


@dg.asset(group_name="real_ablation", code_version=SCORES_VERSION, partitions_def=ABLATION_PARTITIONS, pool="gpu")
def real_ablation_scores(context: dg.AssetExecutionContext, config: TraceGapConfig, store: ArtifactStore,
                         sandbox: SandboxResource, real_ablation_checkpoint: ArtifactRef, sft_checkpoint: ArtifactRef,
                         trace_dataset: ArtifactRef) -> dg.Output:
    """One run's checkpoint scored on the held-out trace tasks, task by task."""
    return _scored(context, config, store, sandbox, SCORES_VERSION, real_ablation_checkpoint, sft_checkpoint,
                   trace_dataset)


def _latest(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> tuple[Path, dict] | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
        limit=1).records
    found = recorded_artifact(records[0]) if records else None
    return None if found is None else (found[0], {**found[1], "materialized_at": records[0].timestamp})


def _samples(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]


@dg.asset(group_name="real_ablation", code_version=REPORT_VERSION, deps=["real_ablation_scores", "real_ablation_start"])
def real_ablation_report(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.Output:
    """Per mode, held-out step and final accuracy (mean ± std over the seeds run so far) and the
    change from the warm start; each mode against each other; every change with its paired 95%
    interval over the tasks: ``ablation.json`` and ``ablation.png``."""
    start = _latest(context.instance, "real_ablation_start")
    if start is None:
        raise dg.Failure("real_ablation_start has not been materialized yet")
    start_folder, start_meta = start
    runs, stale = [], 0
    for key in ABLATION_PARTITIONS.get_partition_keys():
        found = _latest(context.instance, "real_ablation_scores", key)
        if found is None:
            continue
        folder, meta = found
        if meta["start_weights_hash"] != start_meta["weights_hash"]:
            stale += 1  # trained from an earlier SFT checkpoint
            continue
        run = {"mode": key.keys_by_dimension["mode"], "seed": int(key.keys_by_dimension["seed"]),
               "samples": _samples(folder), "weights_hash": meta["weights_hash"], "at": meta["materialized_at"]}
        runs.append({**run, "settings": recorded_settings(context.instance, run)})
    runs, other_settings = ablation.with_common_settings(runs)
    if not runs:
        raise dg.Failure("no real_ablation_scores partition from the current SFT checkpoint has been materialized yet"
                         + (f" ({stale} from an earlier one)" if stale else ""))
    try:
        summary = ablation.compare_on_tasks(_samples(start_folder), runs)
    except ValueError as exc:
        raise dg.Failure(f"real_ablation_report: {exc}") from exc
    settings = runs[0]["settings"]
    summary.update({"preset": settings.get("name"), "grpo_steps": settings.get("grpo_steps"), "runs": len(runs),
                    "left_out_stale_runs": stale, "left_out_other_settings": other_settings,
                    "start_weights_hash": start_meta["weights_hash"],
                    "weights": {f"{r['mode']}|{r['seed']}": r["weights_hash"] for r in runs}})
    digest = hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:20]
    inputs = [ArtifactRef("real_ablation_runs", digest, "", digest)]  # the same runs reuse the report
    lines = ablation.describe(summary) + ablation.describe_changes(summary)

    def write(folder: Path) -> dict:
        (folder / "ablation.json").write_text(json.dumps(summary, indent=1))
        ablation.plot(summary, folder / "ablation.png", f"GRPO reward modes from the demo's SFT checkpoint, "
                      f"{summary['preset']} ({summary['grpo_steps']} steps; {summary['tasks']} held-out tasks)")
        return {"lines": lines, "runs": len(runs)}

    return cached_output(context, store, REPORT_VERSION, {}, inputs, write, lambda ref, meta, reused: {
        "runs": meta["runs"], "summary": dg.MetadataValue.md("\n".join(f"- {line}" for line in meta["lines"])),
        "plot": png_markdown(ref.file("ablation.png"), "ablation"),
        "ablation_json": dg.MetadataValue.path(str(ref.file("ablation.json")))})


def recorded_settings(instance: dg.DagsterInstance, run: dict) -> dict:
    """The training settings of the run's checkpoint, as its materialization stored them."""
    key = dg.MultiPartitionKey({"mode": run["mode"], "seed": str(run["seed"])})
    found = _latest(instance, "real_ablation_checkpoint", key)
    return found[1].get("settings", {}) if found else {}
