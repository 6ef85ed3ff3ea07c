"""Sensors: evaluate each new or changed checkpoint alone; then eval_report follows its
evaluations declaratively (its automation condition, which ``eval_report_automation`` evaluates)."""

import dagster as dg

from pipelines.checkpoints import CHECKPOINT_PARTITIONS, CheckpointRegistry
from pipelines.jobs import evaluation_job


@dg.sensor(job=evaluation_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers new checkpoints (training materializations and the external folder) as "
                       "partitions and evaluates each one alone.")
def checkpoint_sensor(context: dg.SensorEvaluationContext, checkpoint_registry: CheckpointRegistry) -> dg.SensorResult:
    new, fingerprints = checkpoint_registry.discover(context.instance)
    checkpoint_registry.register(new, fingerprints)
    if not new:
        return dg.SensorResult(skip_reason="no new or changed checkpoint")
    for checkpoint in new:
        context.log.info(f"new checkpoint {checkpoint.key}: {checkpoint.model_dir} ({checkpoint.origin})")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=checkpoint.key, partition_key=checkpoint.key) for checkpoint in new],
        dynamic_partitions_requests=[CHECKPOINT_PARTITIONS.build_add_request([checkpoint.key for checkpoint in new])],
    )


eval_report_automation = dg.AutomationConditionSensorDefinition(
    "eval_report_automation", target=dg.AssetSelection.assets("eval_report"),
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=30,
    description="Requests eval_report when its automation condition holds: evaluations updated, none running.",
)
