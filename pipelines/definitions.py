"""The Dagster code location: `dagster dev -m pipelines.definitions` (or `stepcode ui`)."""

import os

import dagster as dg

from pipelines.assets import data, evaluation, training
from pipelines.checkpoints import CheckpointRegistry
from pipelines.checks import DATA_CHECKS
from pipelines.instance import configure_environment
from pipelines.jobs import (
    data_refresh_job,
    eval_report_job,
    evaluation_job,
    stepcode_all_job,
)
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import SandboxResource
from pipelines.sensors import checkpoint_sensor, report_after_evaluation
from pipelines.storage import ArtifactStore

configure_environment()

# Off until a person turns it on in the UI; the cron comes from the environment.
data_refresh_schedule = dg.ScheduleDefinition(
    name="data_refresh_schedule",
    job=data_refresh_job,
    cron_schedule=os.environ.get("STEPCODE_DATA_REFRESH_CRON", "0 3 * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([data, training, evaluation]),
    asset_checks=DATA_CHECKS,
    resources={"store": ArtifactStore(), "sandbox": SandboxResource(), "checkpoint_registry": CheckpointRegistry(),
               "training_launcher": LocalTrainingLauncher()},
    jobs=[stepcode_all_job, data_refresh_job, evaluation_job, eval_report_job],
    schedules=[data_refresh_schedule],
    sensors=[checkpoint_sensor, report_after_evaluation],
)
