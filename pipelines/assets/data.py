"""Data assets (group ``data``): raw programs → instrumented programs → execution traces → the trace
dataset. Thin bodies over stepcode_core; caching and atomic writes in pipelines.storage."""

import io
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow as pa
from pydantic import Field
import pyarrow.parquet as pq

from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
from pipelines.storage import (
    ArtifactRef,
    ArtifactStore,
    cache_key,
    cached_output,
    file_ref,
    png_markdown,
    write_parquet,
)
from pipelines.versions import code_version
from stepcode_core.data import schemas, sources
from stepcode_core.data.dataset import FilterConfig, approx_tokens, build_trace_dataset
from stepcode_core.data.decontaminate import load_evaluation_index
from stepcode_core.data.tasks import PROMPT_STYLES
from stepcode_core.data.shards import ShardLimits, ShardOutcome, ShardTask, rows_hash, split_into_shards
from stepcode_core.parallel import parallel_map
from stepcode_core.tracing.anchors import POLICIES, instrument_fields_star

# Derived from the code each asset runs (pipelines.versions): never bumped by hand.
RAW_VERSION = code_version(__name__, "raw_programs")
INSTRUMENT_VERSION = code_version(__name__, "instrumented_programs")
TRACES_VERSION = code_version(__name__, "execution_traces")
DATASET_VERSION = code_version(__name__, "trace_dataset")


class RawProgramsConfig(dg.Config):
    generator_count: int = Field(default=480, description="programs from the built-in generator (0: none)")
    generator_seed: int = Field(default=0, description="the generator's seed: the same seed, the same programs")
    generator_levels: list[int] = Field(default=[1, 2, 3], description="difficulty levels of the generated programs, "
                                        "in turn: 1 (one assignment) to 4 (loops and branches, CRUXEval-like)")
    humaneval: bool = Field(default=False, description="HumanEval's reference solutions with inputs from their tests")
    files: list[str] = Field(default=[], description="JSONL or Parquet files in CRUXEval's schema (code, input, "
                             "optional output, id, entry_point), or folders of .py scripts")
    huggingface: list[str] = Field(default=[], description='hub datasets in the same schema, "name" or "name:split" '
                                   "(needs network access)")


class InstrumentConfig(dg.Config):
    policy: str = Field(default="paper", description="paper (no anchors inside loops, one after) or dense "
                        "(anchors inside loops too, with a per-anchor hit cap)")


class TraceConfig(dg.Config):
    num_shards: int = Field(default=8, description="shards the programs fall into (by a hash of the id); each is "
                            "cached and stored on its own, and is the unit a Ray worker traces")
    timeout_s: float = Field(default=3.0, description="wall-time limit of one program's run in the sandbox")
    memory_mb: int = Field(default=512, description="memory limit of one program's run")
    cross_check: bool = Field(default=True, description="the second run in another interpreter under another hash "
                              "seed (catches set and dict order); off: twice in one interpreter, faster but blind "
                              "to hash order")
    check_original: bool = Field(default=True, description="run P beside P' in each program's process and drop "
                                 "programs whose result, error or printed output the anchors changed")


class DatasetConfig(dg.Config):
    max_anchor_lines: int = Field(default=10, description="drop programs whose trace has more executed anchor lines")
    min_anchor_lines: int = Field(default=1, description="drop programs with fewer")
    max_prompt_tokens: int = Field(default=1024, description="drop programs whose prompt is longer (the base "
                                   "model's tokenizer)")
    contamination_threshold: float = Field(default=0.5, description="drop programs sharing at least this share of "
                                           "their 10-grams of Python tokens with an evaluation set")
    val_fraction: float = Field(default=0.2, description="share of programs held out (by a hash of the id)")
    prompt_style: str = Field(default="compact", description="full (the task spelled out, ~250 tokens on level 4) "
                              "or compact (code, call and a one-line format: about a third of the tokens)")
    livecodebench_path: str = Field(default="", description="LiveCodeBench execution rows to decontaminate "
                                    "against; empty: the deployment's (benchmark_files.livecodebench)")


def _preview(table: pa.Table, columns: list[str], rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(table.select(columns).slice(0, rows).to_pandas().to_markdown(index=False))


def _table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


@dg.asset(group_name="data", code_version=RAW_VERSION)
def raw_programs(context: dg.AssetExecutionContext, config: RawProgramsConfig, store: ArtifactStore) -> dg.Output:
    """Programs with an input each, from every configured source; provenance on every row. The
    embedded default is the built-in generator (no download)."""

    def write(folder: Path) -> dict:
        programs = sources.from_generator(config.generator_count, config.generator_seed, config.generator_levels)
        if config.humaneval:
            programs += sources.from_humaneval()
        for path in config.files:
            programs += sources.from_path(path)
        for name in config.huggingface:
            dataset, _, split = name.partition(":")
            programs += sources.from_huggingface(dataset, split or "test")
        duplicated = [pid for pid, n in Counter(p.program_id for p in programs).items() if n > 1]
        if duplicated:
            raise dg.Failure(f"duplicate program ids across sources: {duplicated[:5]}")
        table = _table([p.to_row() for p in programs], schemas.RAW_PROGRAMS)
        write_parquet(table, folder / "data.parquet")
        levels = Counter(level for level in table.column("level").to_pylist() if level is not None)
        return {"rows": table.num_rows, "sources": dict(Counter(table.column("source").to_pylist())),
                "levels": {str(level): count for level, count in sorted(levels.items())}}

    try:
        return cached_output(
            context, store, RAW_VERSION, config.model_dump(), [], write,
            lambda ref, meta, reused: {
                "rows": meta["rows"],
                "sources": dg.MetadataValue.json(meta["sources"]),
                "levels": dg.MetadataValue.json(meta.get("levels", {})),
                "preview": _preview(ref.read_table(), ["program_id", "source", "input"]),
            },
        )
    except sources.SourceError as exc:
        raise dg.Failure(str(exc)) from exc


@dg.asset(group_name="data", code_version=INSTRUMENT_VERSION)
def instrumented_programs(
    context: dg.AssetExecutionContext, config: InstrumentConfig, store: ArtifactStore, raw_programs: ArtifactRef
) -> dg.Output:
    """P' for every program: execution-trace anchors inserted by the ast rewriter."""
    if config.policy not in POLICIES:
        raise dg.Failure(f"unknown anchor policy {config.policy!r}; choose one of {', '.join(POLICIES)}")

    def write(folder: Path) -> dict:
        rows = raw_programs.read_table().to_pylist()
        fields = parallel_map(instrument_fields_star, [(row["code"], config.policy) for row in rows])
        for row, instrumented in zip(rows, fields):
            row.update(policy=config.policy, **instrumented)
        table = _table(rows, schemas.INSTRUMENTED_PROGRAMS)
        write_parquet(table, folder / "data.parquet")
        sites = [len(row["anchor_sites"]) for row in rows if row["instrument_error"] is None]
        return {
            "rows": len(rows),
            "failed": len(rows) - len(sites),
            "mean_anchor_sites": round(sum(sites) / max(len(sites), 1), 3),
        }

    return cached_output(
        context, store, INSTRUMENT_VERSION, config.model_dump(), [raw_programs], write,
        lambda ref, meta, reused: {
            **meta,
            "preview": _preview(ref.read_table(), ["program_id", "instrumented_code"], rows=3),
        },
    )


@dg.asset(group_name="data", code_version=TRACES_VERSION)
def execution_traces(
    context: dg.AssetExecutionContext, config: TraceConfig, store: ArtifactStore, sandbox: SandboxResource,
    trace_runner: TraceRunner, instrumented_programs: ArtifactRef,
) -> dg.Output:
    """Every instrumented program run in the sandbox twice (``cross_check``, the default: in two
    interpreters with different hash seeds; off: twice in one process, blind to hash order): its
    trace and whether the two runs agree. The programs fall into ``num_shards`` shards by a hash of
    their id; each shard is cached by its content and stored as soon as it is traced, so a re-run
    after a crash traces only the shards that were missing. ``trace_runner`` says where shards are
    traced: this machine's sandbox pool, or a Ray cluster's workers (pipelines.ray_runner)."""
    if config.num_shards < 1:
        raise dg.Failure(f"num_shards must be >= 1, got {config.num_shards}")
    limits = ShardLimits(config.timeout_s, config.memory_mb, config.cross_check, config.check_original)
    shard_refs: dict[int, ArtifactRef] = {}
    keys: dict[int, str] = {}
    tasks: list[ShardTask] = []
    for index, shard in enumerate(split_into_shards(instrumented_programs.read_table(), config.num_shards)):
        keys[index] = cache_key("execution_traces_shard", TRACES_VERSION, limits.to_dict(),
                                [ArtifactRef("shard", "", "", rows_hash(shard))])
        cached = store.lookup("execution_traces_shards", keys[index])
        if cached is None:
            tasks.append(ShardTask(index, shard, limits))
        else:
            shard_refs[index] = cached
    outcomes: list[ShardOutcome] = []

    def store_shard(outcome: ShardOutcome) -> None:
        def write(folder: Path) -> dict:
            write_parquet(outcome.table, folder / "data.parquet")
            return {"rows": outcome.table.num_rows, "executed": outcome.executed}

        shard_refs[outcome.index], _ = store.build("execution_traces_shards", keys[outcome.index], write)
        outcomes.append(outcome)
        context.log.info(f"shard {outcome.index + 1}/{config.num_shards} ({len(outcomes)}/{len(tasks)} to trace): "
                         f"{outcome.executed} programs in {outcome.seconds:.1f} s"
                         + (f" on node {outcome.node[:12]}" if runner.name == "ray" else "")
                         + (f", traced {outcome.attempts} times (a worker died)" if outcome.attempts > 1 else ""))

    started = time.perf_counter()
    if tasks:
        context.log.info(f"tracing {len(tasks)} of {config.num_shards} shards "
                         f"({sum(task.table.num_rows for task in tasks)} programs); the rest are cached")
        with trace_runner.runner(context, sandbox) as runner:
            runner.run(tasks, store_shard)
    shards = [shard_refs[index] for index in range(config.num_shards)]
    executed_now = sum(outcome.executed for outcome in outcomes)

    def write(folder: Path) -> dict:
        for index, shard in enumerate(shards):
            (folder / f"shard-{index:03d}.parquet").hardlink_to(shard.file("data.parquet"))
        merged = pa.concat_tables(pq.read_table(path) for path in sorted(folder.glob("*.parquet")))
        deterministic = sum(merged.column("deterministic").to_pylist())
        return {
            "rows": merged.num_rows,
            "statuses": dict(Counter(merged.column("status").to_pylist())),
            "determinism_rate": round(deterministic / max(merged.num_rows, 1), 4),
            "unstable_repr": sum(merged.column("unstable_repr").to_pylist()),
            "changed_by_anchors": merged.column("same_as_original").to_pylist().count(False),
        }

    this_run = {
        "executed_programs": executed_now,
        "shards_traced": len(outcomes),
        "shards_reused": config.num_shards - len(outcomes),
        "shards_retried": sum(outcome.attempts > 1 for outcome in outcomes),
        "tracing_s": round(time.perf_counter() - started, 2),
        "trace_runner": dg.MetadataValue.json({**trace_runner.describe(),
                                               "shards_per_node": dict(Counter(o.node for o in outcomes)),
                                               "sandbox_backends": sorted({o.backend for o in outcomes})}),
    }
    return cached_output(
        context, store, TRACES_VERSION, {"num_shards": config.num_shards}, shards, write,
        lambda ref, meta, reused: {
            "rows": meta["rows"],
            **this_run,
            "determinism_rate": meta["determinism_rate"],
            "unstable_repr": meta.get("unstable_repr", 0),
            "changed_by_anchors": meta.get("changed_by_anchors", 0),
            "statuses": dg.MetadataValue.json(meta["statuses"]),
        },
    )


@dg.asset(group_name="data", code_version=DATASET_VERSION)
def trace_dataset(
    context: dg.AssetExecutionContext, config: DatasetConfig, store: ArtifactStore, benchmark_files: BenchmarkFiles,
    execution_traces: ArtifactRef,
) -> dg.Output:
    """The training dataset: filtered, decontaminated programs with their steps, stable train/val
    splits, and the output- and input-prediction task rows. Parquet: ``train.parquet``,
    ``val.parquet`` (programs) and ``tasks/train.parquet``, ``tasks/val.parquet``."""
    filters = FilterConfig(
        max_anchor_lines=config.max_anchor_lines,
        min_anchor_lines=config.min_anchor_lines,
        max_prompt_tokens=config.max_prompt_tokens,
        contamination_threshold=config.contamination_threshold,
        val_fraction=config.val_fraction,
        prompt_style=config.prompt_style,
    ) if config.prompt_style in PROMPT_STYLES else None
    if filters is None:
        raise dg.Failure(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {config.prompt_style!r}")
    # Decontaminated against the deployment's LiveCodeBench file too, unless the config names another.
    livecodebench = benchmark_files.livecodebench_file(config.livecodebench_path)
    settings = {**config.model_dump(), "livecodebench_path": str(livecodebench or "")}
    reference = benchmark_files.reference_dir()
    # Missing reference data is not an error (the embedded default needs none), but it is recorded:
    # the dataset says which benchmarks it was not checked against, and the contamination check warns.
    not_checked = benchmark_files.missing()
    if not_checked:
        context.log.warning(f"trace_dataset: not decontaminated against {', '.join(not_checked)}: "
                            "no reference data (run `stepcode data fetch`)")
    # The evaluation sets are inputs too: a changed benchmark file changes the cache key.
    eval_files = [p for p in (benchmark_files.cruxeval(), benchmark_files.reval() / "DREval_data.jsonl", livecodebench)
                  if p and p.is_file()]
    eval_refs = [file_ref(p, f"eval:{p.name}") for p in eval_files]

    def write(folder: Path) -> dict:
        index = load_evaluation_index(reference, livecodebench)
        traces = execution_traces.read_table().to_pylist()
        build = build_trace_dataset(traces, filters, index)
        (folder / "tasks").mkdir()
        splits = {}
        for split in ("train", "val"):
            programs = [row for row in build.programs if row["split"] == split]
            tasks_rows = [row for row in build.tasks if row["split"] == split]
            write_parquet(_table(programs, schemas.TRACE_PROGRAMS), folder / f"{split}.parquet")
            write_parquet(_table(tasks_rows, schemas.TRACE_TASKS), folder / "tasks" / f"{split}.parquet")
            splits[split] = {"programs": len(programs), "tasks": len(tasks_rows)}
        anchor_counts = Counter(row["anchor_lines"] for row in build.programs)
        _plot_histogram(anchor_counts, folder / "anchor_lines.png")
        by_level = _per_level(build.programs, build.tasks)
        return {
            "input_programs": len(traces),
            "kept_programs": len(build.programs),
            "splits": splits,
            "drop_reasons": dict(build.drops),
            "contaminated_by": dict(build.contaminated_by),
            "anchor_lines_histogram": {str(k): v for k, v in sorted(anchor_counts.items())},
            "mean_anchor_lines": round(sum(k * v for k, v in anchor_counts.items()) / max(len(build.programs), 1), 3),
            "levels": by_level,
            "evaluation_sets": index.programs,
            "not_checked_against": not_checked,
            "filters": settings,
        }

    def to_metadata(ref: ArtifactRef, meta: dict, reused: bool) -> dict:
        plot = ref.file("anchor_lines.png")
        shown = {
            "rows": meta["kept_programs"],
            "kept_programs": meta["kept_programs"],
            "input_programs": meta["input_programs"],
            "train_programs": meta["splits"]["train"]["programs"],
            "val_programs": meta["splits"]["val"]["programs"],
            "mean_anchor_lines": meta["mean_anchor_lines"],
            "levels": dg.MetadataValue.md(_levels_markdown(meta.get("levels", {}))),
            "drop_reasons": dg.MetadataValue.json(meta["drop_reasons"]),
            "contaminated_by": dg.MetadataValue.json(meta["contaminated_by"]),
            "evaluation_sets": dg.MetadataValue.json(meta["evaluation_sets"]),
            "not_checked_against": dg.MetadataValue.json(meta.get("not_checked_against", [])),
            "train_parquet": dg.MetadataValue.path(str(ref.file("train.parquet"))),
            "preview": _preview(pq.read_table(ref.file("train.parquet")), ["program_id", "input", "output", "anchor_lines"]),
        }
        if plot.is_file():
            shown["anchor_lines_histogram"] = png_markdown(plot, "anchor lines per program")
        return shown

    return cached_output(context, store, DATASET_VERSION, settings, [execution_traces, *eval_refs], write, to_metadata)


def _per_level(programs: list[dict], task_rows: list[dict]) -> dict[str, dict]:
    """Per difficulty level ("none" for rows of other sources): programs per split, anchor lines
    (mean and histogram) and the mean prompt length in approximate tokens."""
    found: dict[str, dict] = {}
    for row in programs:
        level = found.setdefault(str(row.get("level") or "none"), {"train": 0, "val": 0, "anchor_lines": Counter(),
                                                                  "prompt_tokens": []})
        level[row["split"]] += 1
        level["anchor_lines"][row["anchor_lines"]] += 1
    for row in task_rows:
        found[str(row.get("level") or "none")]["prompt_tokens"].append(approx_tokens(row["prompt"]))
    return {
        key: {"programs": value["train"] + value["val"], "train": value["train"], "val": value["val"],
              "mean_anchor_lines": round(sum(k * v for k, v in value["anchor_lines"].items())
                                         / max(value["train"] + value["val"], 1), 2),
              "anchor_lines_histogram": {str(k): v for k, v in sorted(value["anchor_lines"].items())},
              "mean_prompt_tokens": round(sum(value["prompt_tokens"]) / max(len(value["prompt_tokens"]), 1), 1)}
        for key, value in sorted(found.items())
    }


def _levels_markdown(levels: dict[str, dict]) -> str:
    header = "| level | programs | train | val | mean anchor lines | mean prompt tokens |\n|---|---|---|---|---|---|\n"
    return header + "".join(f"| {key} | {v['programs']} | {v['train']} | {v['val']} | {v['mean_anchor_lines']} | "
                            f"{v['mean_prompt_tokens']} |\n" for key, v in levels.items())


def _plot_histogram(counts: Counter, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3), dpi=100)
    keys = sorted(counts)
    axis.bar(keys, [counts[k] for k in keys], color="#4C72B0")
    axis.set_xlabel("anchor lines per program")
    axis.set_ylabel("programs")
    axis.set_title("trace_dataset: executed anchor lines")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path.write_bytes(buffer.getvalue())
