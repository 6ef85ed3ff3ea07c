"""`stepcode demo` (`make demo`): materialize the data and training assets on the embedded default,
evaluate each checkpoint that is new to this instance (one partition each, as the checkpoint sensor
would), then build ``eval_report``; in this process, against the persistent instance, so the Dagster
UI shows the runs afterwards."""

from __future__ import annotations

import sys
import time

import dagster as dg

from pipelines.checkpoints import (
    CHECKPOINT_PARTITIONS,
    CheckpointRegistry,
    register_new_checkpoints,
)
from pipelines.definitions import defs
from pipelines.instance import configure_environment
from pipelines.jobs import EVAL_ASSET_KEYS

QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _print_materializations(result) -> None:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = materialization.metadata
        path = metadata.get("artifact") or metadata.get("model_dir")
        reused = metadata.get("reused")
        rows = metadata.get("rows")
        partition = f"[{event.partition}]" if event.partition else ""
        print(
            f"  {materialization.asset_key.to_user_string() + partition:44s}"
            f" rows={rows.value if rows else '-':<6} reused={reused.value if reused else '-'!s:<5}"
            f" {path.value if path else ''}"
        )


def _unevaluated(instance, keys: list[str]) -> list[str]:
    """Registered checkpoints that lack a materialization of some evaluation asset (new ones, or
    ones whose evaluation failed or was interrupted)."""
    def evaluated(key: str) -> bool:
        return all(instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1).records
            for asset in EVAL_ASSET_KEYS)

    return [key for key in keys if not evaluated(key)]


def run_demo() -> int:
    env = configure_environment()
    instance = dg.DagsterInstance.get()
    started = time.perf_counter()
    print("materializing the data and training assets (embedded default) ...", flush=True)
    result = defs.resolve_job_def("stepcode_all").execute_in_process(instance=instance, run_config=QUIET)
    if not result.success:
        print("the demo run failed; see the log above", file=sys.stderr)
        return 1
    print(f"\ndata and training done in {time.perf_counter() - started:.1f} s (run {result.run_id})\n")
    _print_materializations(result)
    for evaluation in result.get_asset_check_evaluations():
        verdict = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {verdict}")

    # What the checkpoint sensor does under `dagster dev`: register, then evaluate each new checkpoint alone.
    registry = CheckpointRegistry()
    for checkpoint in register_new_checkpoints(instance, registry):
        print(f"\nnew checkpoint {checkpoint.key} ({checkpoint.origin}): {checkpoint.model_dir}")
    pending = _unevaluated(instance, instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name))
    evaluation_job = defs.resolve_job_def("evaluation")
    for key in pending:
        print(f"\nevaluating checkpoint {key} (subset sizes: the evaluation assets' config) ...", flush=True)
        evaluated = evaluation_job.execute_in_process(instance=instance, partition_key=key, run_config=QUIET)
        if not evaluated.success:
            print(f"evaluation of {key} failed; see the log above", file=sys.stderr)
            return 1
        _print_materializations(evaluated)

    report = defs.resolve_job_def("eval_report_job").execute_in_process(instance=instance, run_config=QUIET)
    if not report.success:
        print("eval_report failed; see the log above", file=sys.stderr)
        return 1
    (event,) = report.get_asset_materialization_events()
    metadata = event.step_materialization_data.materialization.metadata
    print(f"\n{metadata['report'].value}\n")
    print(f"report: {metadata['report_md'].value} (and report.png beside it)")
    print(f"\nall done in {time.perf_counter() - started:.1f} s; "
          f"artifacts and the Dagster instance live under {env['STEPCODE_HOME']}")
    print("open the UI with:  make ui   (or .venv/bin/stepcode ui), then http://127.0.0.1:3000")
    return 0
