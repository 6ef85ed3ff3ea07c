"""`stepcode demo` (`make demo`): materialize every asset on the embedded default, in this process,
against the persistent instance, so the Dagster UI shows the runs afterwards."""

from __future__ import annotations

import sys
import time

from pipelines.instance import configure_environment


def run_demo() -> int:
    env = configure_environment()
    import dagster as dg

    from pipelines.definitions import defs

    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("stepcode_all")
    print(f"materializing {len(list(defs.resolve_all_asset_keys()))} assets (embedded default) ...", flush=True)
    started = time.perf_counter()
    quiet = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
    result = job.execute_in_process(instance=instance, run_config=quiet)
    elapsed = time.perf_counter() - started
    if not result.success:
        print("the demo run failed; see the log above", file=sys.stderr)
        return 1

    print(f"\ndone in {elapsed:.1f} s (run {result.run_id})\n")
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = materialization.metadata
        path = metadata.get("artifact") or metadata.get("model_dir")
        reused = metadata.get("reused")
        rows = metadata.get("rows")
        print(
            f"  {materialization.asset_key.to_user_string():24s}"
            f" rows={rows.value if rows else '-':<6} reused={reused.value if reused else '-'!s:<5}"
            f" {path.value if path else ''}"
        )
    for evaluation in result.get_asset_check_evaluations():
        verdict = "passed" if evaluation.passed else f"FAILED ({evaluation.severity.value})"
        print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {verdict}")
    print(f"\nartifacts and the Dagster instance live under {env['STEPCODE_HOME']}")
    print("open the UI with:  make ui   (or .venv/bin/stepcode ui), then http://127.0.0.1:3000")
    return 0
