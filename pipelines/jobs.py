"""Asset jobs: the whole graph, the data refresh, one checkpoint's evaluation, the report, and the
ablations (in miniature, and on the real model)."""

import dagster as dg

EVAL_ASSET_KEYS = ("eval_cruxeval", "eval_livecodebench", "eval_reval", "eval_trace_gap")

stepcode_all_job = dg.define_asset_job(
    "stepcode_all", selection=dg.AssetSelection.groups("data", "training"),
    description="Materialize the data and training assets (what `make demo` runs before evaluating).",
)
data_refresh_job = dg.define_asset_job(
    "data_refresh", selection=dg.AssetSelection.groups("data"), description="Refresh the data stages."
)
evaluation_job = dg.define_asset_job(
    "evaluation", selection=dg.AssetSelection.assets(*EVAL_ASSET_KEYS),
    description="Evaluate one checkpoint (a partition) on every benchmark.",
)
eval_report_job = dg.define_asset_job(
    "eval_report_job", selection=dg.AssetSelection.assets("eval_report"),
    description="Tabulate every evaluated checkpoint beside the published numbers.",
)
ablation_job = dg.define_asset_job(
    "ablation", selection=dg.AssetSelection.groups("ablation"),
    description="GRPO's reward modes x seeds from one warm start (a partition: mode|seed; backfill them all), "
                "then ablation_report. `stepcode ablation` runs every partition in turn.",
)
real_ablation_job = dg.define_asset_job(
    "real_ablation",
    # What it reads (the demo's data and SFT checkpoint) comes along: reused when the demo built it.
    selection=dg.AssetSelection.groups("real_ablation").upstream(),
    description="GRPO's reward modes x seeds from the demo's SFT checkpoint (a partition: mode|seed), each scored "
                "on the held-out trace tasks, then real_ablation_report with paired intervals. "
                "`stepcode ablation --model smollm2` runs every partition in turn.",
)
