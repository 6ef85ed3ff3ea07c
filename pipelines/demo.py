"""`stepcode demo` (`make demo`) and `stepcode ablation`, from a terminal.

The demo materializes the data and training assets on the embedded default, evaluates each
checkpoint that is new to this instance (one partition each, as the checkpoint sensor would), builds
``eval_report`` and prints whether training helped, with 95% intervals. The ablation runs every
partition (mode × seed) of the ``ablation`` job (``--model smollm2``: ``real_ablation``) in turn,
then prints its report. Both run in
this process against the persistent instance, so the Dagster UI shows the runs afterwards; both
print one line per step or per tenth of a stage, not the libraries' warnings and bars.
"""

from __future__ import annotations

import json
import sys
import time

import dagster as dg

from pipelines.assets import ablation, real_ablation
from pipelines.checkpoints import (
    CHECKPOINT_PARTITIONS,
    CheckpointRegistry,
    register_new_checkpoints,
)
from pipelines.console import COMPACT_LOGGING
from pipelines.definitions import defs
from pipelines.instance import configure_environment
from pipelines.jobs import EVAL_ASSET_KEYS
from stepcode_core.data.reference import missing_benchmarks, reference_data_dir
from stepcode_core.training.settings import preset as settings_preset


def _elapsed(started: float) -> str:
    seconds = time.perf_counter() - started
    return f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def _run(job_name: str, instance, what: str, **options):
    """Run a job in this process with the compact logger; None (and a line on stderr) if it failed."""
    result = defs.resolve_job_def(job_name).execute_in_process(instance=instance, raise_on_error=False, **options)
    if not result.success:
        print(f"{what} failed; see the log above", file=sys.stderr)
        return None
    return result


def _print_materializations(result) -> None:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        metadata = materialization.metadata
        path = metadata.get("artifact") or metadata.get("model_dir")
        reused = metadata.get("reused")
        partition = f"[{event.partition}]" if event.partition else ""
        print(f"  {materialization.asset_key.to_user_string() + partition:44s}"
              f" {'reused' if reused and reused.value else 'built ':7s} {path.value if path else ''}")


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
    missing = missing_benchmarks()
    if missing:
        print(f"reference data for {', '.join(missing)} is not in {reference_data_dir()}: their evaluations are "
              "skipped and the dataset is not decontaminated against them (run `stepcode data fetch`)\n", flush=True)
    print("[1/3] data and training (embedded default: generated programs, SmolLM2-135M) ...", flush=True)
    result = _run("stepcode_all", instance, "the data and training run", run_config=COMPACT_LOGGING)
    if result is None:
        return 1
    print(f"\ndata and training done ({_elapsed(started)}; run {result.run_id})")
    _print_materializations(result)
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed:
            outcome = "warning" if evaluation.severity == dg.AssetCheckSeverity.WARN else "FAILED"
            print(f"  check {evaluation.asset_key.to_user_string()}.{evaluation.check_name}: {outcome}"
                  + (f": {evaluation.description}" if evaluation.description else ""))

    # What the checkpoint sensor does under `dagster dev`: register, then evaluate each new checkpoint alone.
    registry = CheckpointRegistry()
    register_new_checkpoints(instance, registry)
    pending = _unevaluated(instance, instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name))
    print(f"\n[2/3] evaluating {len(pending)} new checkpoint(s) ...", flush=True)
    for key in pending:
        print(f"\nevaluating {key} ...", flush=True)
        if _run("evaluation", instance, f"evaluation of {key}", partition_key=key, run_config=COMPACT_LOGGING) is None:
            return 1

    print("\n[3/3] the report ...", flush=True)
    report = _run("eval_report_job", instance, "eval_report", run_config=COMPACT_LOGGING)
    if report is None:
        return 1
    (event,) = report.get_asset_materialization_events()
    metadata = event.step_materialization_data.materialization.metadata
    print("\nheld-out trace tasks, CRUXEval and REval (percent, 95% intervals):\n")
    print(metadata["report"].value)
    print(f"report: {metadata['report_md'].value} (report.json and report.png beside it)")
    if "compare_html" in metadata:
        print(f"what each model predicted, step by step: {metadata['compare_html'].value}")
    print(f"\nthe demo took {_elapsed(started)}; artifacts and the Dagster instance live under {env['STEPCODE_HOME']}")
    print("open the UI with:  make ui   (or .venv/bin/stepcode ui), then http://127.0.0.1:3000")
    return 0


REAL_MODEL = "smollm2"  # `stepcode ablation --model smollm2`: the real_ablation job


def run_ablation(preset: str = "", model: str = "", overrides: dict | None = None, runs: list[str] | None = None) -> int:
    """Every partition (mode × seed) of the ``ablation`` job in turn (cached ones are reused), then
    its report; with ``model="smollm2"``, of the ``real_ablation`` job (from the demo's SFT
    checkpoint, on the held-out trace tasks). ``overrides``: TrainSettings fields of the GRPO runs
    (not of the warm start); ``runs``: only these ``mode|seed`` partitions."""
    real = model == REAL_MODEL
    job, training_assets = (("real_ablation", ("real_ablation_checkpoint",)) if real
                            else ("ablation", ("ablation_start", "ablation_checkpoint")))
    ops: dict = {}
    if preset:
        ops.update({name: {"config": {"preset": preset}} for name in training_assets})
    if model and not real:
        ops["ablation_base"] = {"config": {"model": model}}
    if overrides:
        try:
            settings_preset(preset or ("cpu-demo" if real else "tiny-ablation"), **overrides)
        except (ValueError, TypeError) as exc:
            print(f"--set: {exc}", file=sys.stderr)
            return 2
        runs_asset = training_assets[-1]
        ops.setdefault(runs_asset, {"config": {}})["config"]["overrides_json"] = json.dumps(overrides)
    run_config = {**COMPACT_LOGGING, **({"ops": ops} if ops else {})}
    keys = (real_ablation if real else ablation).ABLATION_PARTITIONS.get_partition_keys()
    if runs:
        unknown = sorted(set(runs) - {str(key) for key in keys})
        if unknown:
            print(f"--runs: no run {', '.join(unknown)}; the runs are {', '.join(str(key) for key in keys)}",
                  file=sys.stderr)
            return 2
        keys = [key for key in keys if str(key) in runs]
    env = configure_environment()
    instance = dg.DagsterInstance.get()
    started = time.perf_counter()
    result = None
    for index, key in enumerate(keys, 1):
        print(f"\n[{index}/{len(keys)}] {job} run {key} ({_elapsed(started)} so far) ...", flush=True)
        result = _run(job, instance, f"{job} run {key}", partition_key=key, run_config=run_config)
        if result is None:
            return 1
    report = f"{job}_report"
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key == dg.AssetKey(report)]
    metadata = event.step_materialization_data.materialization.metadata
    what = ("held-out trace tasks, from the demo's SFT checkpoint (mean ± std over seeds; changes in points, "
            "paired 95% intervals)" if real else "held-out accuracy (mean ± std over seeds, percent)")
    print(f"\n{job} ({len(keys)} runs), {what}:")
    print(metadata["summary"].value)
    print(f"\nablation.json: {metadata['ablation_json'].value} (ablation.png beside it)")
    print(f"the ablation took {_elapsed(started)}; artifacts under {env['STEPCODE_HOME']}")
    return 0
