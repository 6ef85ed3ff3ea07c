"""What the training assets ask before they train: did the data they would train on fail a blocking
check (:mod:`pipelines.checks`)? The verdicts are read from the Dagster instance, so a failure
recorded in an earlier run still counts.

Kept apart from the checks themselves so that a training asset's code version does not include the
data assets' code, which the checks reference.
"""

from __future__ import annotations

import dagster as dg

from pipelines.storage import ArtifactRef

# Every check in pipelines.checks.DATA_CHECKS, by the asset it guards (a test keeps the two equal).
BLOCKING_CHECKS = {
    "trace_dataset": ("trace_dataset_schema", "trace_dataset_nonempty_splits", "trace_dataset_not_contaminated",
                      "trace_dataset_anchor_counts"),
    "execution_traces": ("execution_traces_determinism",),
}


def blocking_check_failures(instance: dg.DagsterInstance, asset: str, data_version: str | None) -> list[str]:
    """The blocking checks of ``asset`` whose latest verdict failed on the data now in use: its
    materialization with ``data_version`` (None: the latest one). One line per failure, with the
    check's own description of why."""
    keys = [dg.AssetCheckKey(dg.AssetKey(asset), name) for name in BLOCKING_CHECKS[asset]]
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    failures = []
    for key, record in records.items():
        evaluation = record.evaluation if record is not None else None
        if evaluation is None or evaluation.passed or evaluation.severity != dg.AssetCheckSeverity.ERROR:
            continue
        target = evaluation.target_materialization_data
        if data_version is not None and target is not None and _data_version(instance, asset, target.storage_id) != data_version:
            continue  # it judged other data than what is in use now
        why = evaluation.description or ", ".join(
            f"{name}={getattr(value, 'value', value)}" for name, value in evaluation.metadata.items()
            if name in ("contaminated", "mismatched_files", "outside_bounds", "determinism_rate", "splits"))
        failures.append(f"{asset}: {key.name} failed ({why})")
    return failures


def _data_version(instance: dg.DagsterInstance, asset: str, storage_id: int) -> str | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), storage_ids=[storage_id]), limit=1).records
    return records[0].asset_materialization.tags.get("dagster/data_version") if records else None


def require_checked_dataset(context: dg.AssetExecutionContext, trace_dataset: ArtifactRef) -> None:
    """Fail the step, saying why, when the dataset it would train on failed a blocking check (in an
    earlier run: in the same run, Dagster already skips the step)."""
    failures = blocking_check_failures(context.instance, "trace_dataset", trace_dataset.content_hash)
    failures += blocking_check_failures(context.instance, "execution_traces", None)
    if failures:
        raise dg.Failure("the trace dataset failed blocking data checks; training refuses it:\n" + "\n".join(failures),
                         metadata={"failed_checks": dg.MetadataValue.json(failures)})
