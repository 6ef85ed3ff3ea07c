"""Asset checks on the data stages: what a person would verify before training on a dataset.

Every check is *blocking* with ERROR severity: in a run that also trains, a failed check stops the
run before any training step starts. A training step of a later run consults the recorded verdicts
(:mod:`pipelines.verdicts`), so a dataset that failed a check never reaches a checkpoint.
"""

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from pipelines.assets.data import execution_traces, trace_dataset
from pipelines.resources import BenchmarkFiles
from pipelines.storage import ArtifactRef
from stepcode_core.data import schemas
from stepcode_core.data.dataset import FilterConfig
from stepcode_core.data.decontaminate import load_evaluation_index


# The bar a dataset must meet whatever its own filter settings were (a looser filter does not lower it).
CONTAMINATION_THRESHOLD = FilterConfig.contamination_threshold
MIN_DETERMINISM_RATE = 0.95


def _stored(ref: ArtifactRef) -> dict:
    return json.loads(ref.file("meta.json").read_text())["metadata"]


@dg.asset_check(asset=trace_dataset, blocking=True, description="Every Parquet file has the declared pyarrow schema.")
def trace_dataset_schema(trace_dataset: ArtifactRef) -> dg.AssetCheckResult:
    wrong = []
    for name, schema in (("train.parquet", schemas.TRACE_PROGRAMS), ("val.parquet", schemas.TRACE_PROGRAMS),
                         ("tasks/train.parquet", schemas.TRACE_TASKS), ("tasks/val.parquet", schemas.TRACE_TASKS)):
        found = pq.read_schema(trace_dataset.file(name)).remove_metadata()
        if not found.equals(schema):
            wrong.append(name)
    return dg.AssetCheckResult(passed=not wrong, metadata={"mismatched_files": dg.MetadataValue.json(wrong)})


@dg.asset_check(asset=trace_dataset, blocking=True, description="Both splits hold programs and task rows.")
def trace_dataset_nonempty_splits(trace_dataset: ArtifactRef) -> dg.AssetCheckResult:
    splits = _stored(trace_dataset)["splits"]
    passed = all(counts["programs"] > 0 and counts["tasks"] > 0 for counts in splits.values())
    return dg.AssetCheckResult(passed=passed, metadata={"splits": dg.MetadataValue.json(splits)})


@dg.asset_check(asset=trace_dataset, blocking=True,
                description=f"No kept program overlaps an evaluation set (10-grams, overlap >= {CONTAMINATION_THRESHOLD}).")
def trace_dataset_not_contaminated(trace_dataset: ArtifactRef, benchmark_files: BenchmarkFiles) -> dg.AssetCheckResult:
    meta = _stored(trace_dataset)
    livecodebench = meta["filters"].get("livecodebench_path") or None
    index = load_evaluation_index(benchmark_files.reference_dir(), Path(livecodebench) if livecodebench else None)
    codes = []
    for split in ("train", "val"):
        codes += pq.read_table(trace_dataset.file(f"{split}.parquet"), columns=["code"]).column("code").to_pylist()
    overlaps = [index.overlap(code) for code in codes]
    contaminated = [(code, overlap) for code, overlap in zip(codes, overlaps) if overlap[0] >= CONTAMINATION_THRESHOLD]
    examples = [{"overlap": round(overlap[0], 3), "matches": str(overlap[1]), "code": code[:200]}
                for code, overlap in contaminated[:5]]
    # Absent reference data is never a silent pass: a warning that names what was not checked.
    unchecked = benchmark_files.missing()
    if contaminated:
        description = f"{len(contaminated)} of {len(codes)} programs overlap an evaluation set"
    elif unchecked:
        description = (f"not checked against {', '.join(unchecked)}: no reference data (run `stepcode data fetch`); "
                       f"{len(codes)} programs clean against {', '.join(index.programs) or 'nothing'}")
    else:
        description = None
    return dg.AssetCheckResult(
        passed=not contaminated and not unchecked,
        severity=dg.AssetCheckSeverity.ERROR if contaminated else dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={"not_checked_against": dg.MetadataValue.json(unchecked),"contaminated": len(contaminated), "checked": len(codes), "threshold": CONTAMINATION_THRESHOLD,
                  "dataset_filter_threshold": meta["filters"]["contamination_threshold"],
                  "examples": dg.MetadataValue.json(examples),
                  "evaluation_sets": dg.MetadataValue.json(index.programs)},
    )


@dg.asset_check(asset=trace_dataset, blocking=True, description="Executed anchor lines per program lie within the filter's bounds.")
def trace_dataset_anchor_counts(trace_dataset: ArtifactRef) -> dg.AssetCheckResult:
    meta = _stored(trace_dataset)
    low, high = meta["filters"]["min_anchor_lines"], meta["filters"]["max_anchor_lines"]
    counts = []
    for split in ("train", "val"):
        counts += pq.read_table(trace_dataset.file(f"{split}.parquet"), columns=["anchor_lines"]).column("anchor_lines").to_pylist()
    outside = sum(not low <= count <= high for count in counts)
    return dg.AssetCheckResult(
        passed=outside == 0,
        metadata={"outside_bounds": outside, "mean_anchor_lines": meta["mean_anchor_lines"],
                  "histogram": dg.MetadataValue.json(meta["anchor_lines_histogram"])},
    )


@dg.asset_check(asset=execution_traces, blocking=True,
                description=f"Share of programs whose two runs agree is at least {MIN_DETERMINISM_RATE:.0%} "
                            "(runs that differ only in a printed address count as agreeing: those are "
                            "unstable reprs, dropped for that reason).")
def execution_traces_determinism(execution_traces: ArtifactRef) -> dg.AssetCheckResult:
    rows = execution_traces.read_table(None).select(
        ["program_id", "status", "deterministic", "unstable_repr", "nondeterminism"]).to_pylist()
    ran = [row for row in rows if row["status"] != "not_run"]
    nondeterministic = [row for row in ran if not row["deterministic"] and not row["unstable_repr"]]
    rate = 1 - len(nondeterministic) / len(ran) if ran else 0.0
    examples = [{"program_id": row["program_id"], "why": row["nondeterminism"] or f"status {row['status']}"}
                for row in nondeterministic[:10]]
    description = None
    if nondeterministic:
        shown = "; ".join(f"{e['program_id']}: {e['why']}" for e in examples[:3])
        description = f"{len(nondeterministic)} of {len(ran)} programs differ between two runs ({shown})"
    return dg.AssetCheckResult(
        passed=bool(ran) and rate >= MIN_DETERMINISM_RATE,
        description=description,
        metadata={"determinism_rate": round(rate, 4), "minimum": MIN_DETERMINISM_RATE, "programs_run": len(ran),
                  "nondeterministic": len(nondeterministic),
                  "unstable_repr": sum(bool(row["unstable_repr"]) for row in ran),
                  "examples": dg.MetadataValue.json(examples)},
    )


DATA_CHECKS = [
    trace_dataset_schema,
    trace_dataset_nonempty_splits,
    trace_dataset_not_contaminated,
    trace_dataset_anchor_counts,
    execution_traces_determinism,
]
