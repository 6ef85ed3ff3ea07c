"""Asset checks on the data stages: what a person would verify before training on a dataset."""

import json
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from pipelines.assets.data import execution_traces, trace_dataset
from pipelines.storage import ArtifactRef
from stepcode_core.data import schemas
from stepcode_core.data.decontaminate import load_evaluation_index
from stepcode_core.paths import shared_data_dir


def _stored(ref: ArtifactRef) -> dict:
    return json.loads(ref.file("meta.json").read_text())["metadata"]


@dg.asset_check(asset=trace_dataset, description="Every Parquet file has the declared pyarrow schema.")
def trace_dataset_schema(trace_dataset: ArtifactRef) -> dg.AssetCheckResult:
    wrong = []
    for name, schema in (("train.parquet", schemas.TRACE_PROGRAMS), ("val.parquet", schemas.TRACE_PROGRAMS),
                         ("tasks/train.parquet", schemas.TRACE_TASKS), ("tasks/val.parquet", schemas.TRACE_TASKS)):
        found = pq.read_schema(trace_dataset.file(name)).remove_metadata()
        if not found.equals(schema):
            wrong.append(name)
    return dg.AssetCheckResult(passed=not wrong, metadata={"mismatched_files": dg.MetadataValue.json(wrong)})


@dg.asset_check(asset=trace_dataset, description="Both splits hold programs and task rows.")
def trace_dataset_nonempty_splits(trace_dataset: ArtifactRef) -> dg.AssetCheckResult:
    splits = _stored(trace_dataset)["splits"]
    passed = all(counts["programs"] > 0 and counts["tasks"] > 0 for counts in splits.values())
    return dg.AssetCheckResult(passed=passed, metadata={"splits": dg.MetadataValue.json(splits)})


@dg.asset_check(asset=trace_dataset, description="No kept program overlaps an evaluation set (10-grams).")
def trace_dataset_not_contaminated(trace_dataset: ArtifactRef) -> dg.AssetCheckResult:
    meta = _stored(trace_dataset)
    threshold = meta["filters"]["contamination_threshold"]
    livecodebench = meta["filters"].get("livecodebench_path") or None
    index = load_evaluation_index(shared_data_dir(), Path(livecodebench) if livecodebench else None)
    codes = []
    for split in ("train", "val"):
        codes += pq.read_table(trace_dataset.file(f"{split}.parquet"), columns=["code"]).column("code").to_pylist()
    contaminated = sum(index.overlap(code)[0] >= threshold for code in codes)
    return dg.AssetCheckResult(
        passed=contaminated == 0,
        metadata={"contaminated": contaminated, "checked": len(codes), "evaluation_sets": dg.MetadataValue.json(index.programs)},
    )


@dg.asset_check(asset=trace_dataset, description="Executed anchor lines per program lie within the filter's bounds.")
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


@dg.asset_check(asset=execution_traces, description="Share of programs whose two runs agree (warns below 95%).")
def execution_traces_determinism(execution_traces: ArtifactRef) -> dg.AssetCheckResult:
    table = execution_traces.read_table(None)
    ran = [det for det, status in zip(table.column("deterministic").to_pylist(), table.column("status").to_pylist())
           if status != "not_run"]
    rate = sum(ran) / len(ran) if ran else 0.0
    return dg.AssetCheckResult(
        passed=rate >= 0.95,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"determinism_rate": round(rate, 4), "programs_run": len(ran)},
    )


DATA_CHECKS = [
    trace_dataset_schema,
    trace_dataset_nonempty_splits,
    trace_dataset_not_contaminated,
    trace_dataset_anchor_counts,
    execution_traces_determinism,
]
