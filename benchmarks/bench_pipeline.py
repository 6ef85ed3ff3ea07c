"""The data stages end to end: materialize raw_programs → trace_dataset for N generated programs from
a fresh storage root, then again with nothing changed (every artifact must be reused).

Usage: python benchmarks/bench_pipeline.py [--programs 10000] [--root DIR] [--quick]
The goal: the first run of 10,000 programs, cross-check on, within 45 s (``goal_s``).
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402

from pipelines.assets import data  # noqa: E402
from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner  # noqa: E402
from pipelines.storage import ArtifactStore  # noqa: E402

STAGES = ["raw_programs", "instrumented_programs", "execution_traces", "trace_dataset"]
GOAL_S = 45.0  # the first run of 10,000 programs, cross-check and the P-vs-P' check on


def materialize(root: Path, programs: int, cross_check: bool = True,
                check_original: bool = True) -> tuple[float, dict[str, float], dict[str, dict]]:
    started = time.perf_counter()
    result = dg.materialize(
        [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset],
        resources={"store": ArtifactStore(root=str(root)), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                   "benchmark_files": BenchmarkFiles()},
        run_config={"ops": {"raw_programs": {"config": {"generator_count": programs, "generator_seed": 0}},
                            "execution_traces": {"config": {"cross_check": cross_check,
                                                            "check_original": check_original}}}},
    )
    elapsed = time.perf_counter() - started
    assert result.success
    durations: dict[str, float] = {}
    for event in result.all_events:
        if event.is_step_success:  # a graph asset's steps would be "asset.op[key]": counted as the asset
            stage = event.step_key.split(".")[0]
            durations[stage] = durations.get(stage, 0.0) + event.event_specific_data.duration_ms / 1000
    metadata = {
        event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    return elapsed, durations, metadata


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--root", type=Path, default=None, help="storage root (default: a fresh temp dir)")
    parser.add_argument("--no-cross-check", action="store_true",
                        help="one run a program (no second run under another hash seed)")
    parser.add_argument("--compare-check-original", action="store_true",
                        help="also run the first pass without the P-vs-P' check (fresh storage), to show its cost")
    parser.add_argument("--quick", action="store_true", help="200 programs (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.programs = 200
    root = args.root or Path(tempfile.mkdtemp(prefix="stepcode-bench-"))

    unchecked = None
    if args.compare_check_original:
        print(f"baseline: {args.programs} programs without the P-vs-P' check", file=sys.stderr)
        unchecked = materialize(Path(tempfile.mkdtemp(prefix="stepcode-bench-")), args.programs,
                                not args.no_cross_check, check_original=False)
    print(f"first run: {args.programs} programs, fresh storage at {root}", file=sys.stderr)
    first_s, first_steps, first_meta = materialize(root, args.programs, not args.no_cross_check)
    print("second run: nothing changed", file=sys.stderr)
    noop_s, noop_steps, noop_meta = materialize(root, args.programs, not args.no_cross_check)

    dataset = first_meta["trace_dataset"]
    figures = {
        "quick": args.quick,
        "programs": args.programs,
        "cross_check": not args.no_cross_check,
        "first_s": round(first_s, 2),
        # From raw programs to the Parquet dataset: the stages' own time (steps summed), without run set-up.
        "raw_to_parquet_s": round(sum(first_steps.get(stage, 0.0) for stage in STAGES), 2),
        "goal_s": GOAL_S if args.programs == 10_000 else None,
        "noop_s": round(noop_s, 2),
        "noop_vs_first": round(noop_s / first_s, 3),
        "noop_executions": int(noop_meta["execution_traces"]["executed_programs"].value),
        "first_executions": int(first_meta["execution_traces"]["executed_programs"].value),
        "noop_all_reused": all(meta["reused"].value for meta in noop_meta.values()),
        "kept_programs": int(dataset["kept_programs"].value),
        "drop_reasons": dataset["drop_reasons"].value,
        "stages_first_s": {stage: round(first_steps.get(stage, 0.0), 2) for stage in STAGES},
        "stages_noop_s": {stage: round(noop_steps.get(stage, 0.0), 2) for stage in STAGES},
        "dataset_path": str(dataset["train_parquet"].value),
    }
    if unchecked is not None:
        traces_without = unchecked[1].get("execution_traces", 0.0)
        figures["execution_traces_without_check_original_s"] = round(traces_without, 2)
        figures["check_original_cost"] = round(first_steps.get("execution_traces", 0.0) / max(traces_without, 1e-9), 3)
    for key, value in figures.items():
        print(f"{key:20s} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
