"""The Dagster code location: `dagster dev -m pipelines.definitions` (or `stepcode ui`)."""

import dagster as dg

from pipelines.assets import ablation, data, evaluation, real_ablation, training
from pipelines.checks import DATA_CHECKS
from pipelines.console import compact_console
from pipelines.deployments import resources_for
from pipelines.instance import configure_environment
from pipelines.jobs import (
    ablation_job,
    data_refresh_job,
    eval_report_job,
    evaluation_job,
    real_ablation_job,
    stepcode_all_job,
)
from pipelines.sensors import checkpoint_sensor, eval_report_automation

configure_environment()

# Off until a person turns it on in the UI; the cron comes from the environment.
data_refresh_schedule = dg.ScheduleDefinition(
    name="data_refresh_schedule",
    job=data_refresh_job,
    cron_schedule=dg.EnvVar("STEPCODE_DATA_REFRESH_CRON").get_value("0 3 * * *") or "0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([data, training, evaluation, ablation, real_ablation]),
    asset_checks=DATA_CHECKS,
    # $STEPCODE_DEPLOYMENT: local (the default) or production (pipelines/deployments.py).
    resources=resources_for(),
    jobs=[stepcode_all_job, data_refresh_job, evaluation_job, eval_report_job, ablation_job,
          real_ablation_job],
    schedules=[data_refresh_schedule],
    # Dagster's own console logger stays the default; the terminal commands choose the compact one.
    loggers={**dg.default_loggers(), "compact_console": compact_console},
    sensors=[checkpoint_sensor, eval_report_automation],
)
