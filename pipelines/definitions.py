"""The Dagster code location: `dagster dev -m pipelines.definitions` (or `stepcode ui`)."""

import os

import dagster as dg

from pipelines.assets import data, training
from pipelines.checks import DATA_CHECKS
from pipelines.instance import configure_environment
from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactStore

configure_environment()

data_assets = dg.load_assets_from_modules([data])
training_assets = dg.load_assets_from_modules([training])

all_assets_job = dg.define_asset_job(
    "stepcode_all", selection=dg.AssetSelection.all(), description="Materialize every asset (what `make demo` runs)."
)
data_refresh_job = dg.define_asset_job(
    "data_refresh", selection=dg.AssetSelection.groups("data"), description="Refresh the data stages."
)
# Off until a person turns it on in the UI; the cron comes from the environment.
data_refresh_schedule = dg.ScheduleDefinition(
    name="data_refresh_schedule",
    job=data_refresh_job,
    cron_schedule=os.environ.get("STEPCODE_DATA_REFRESH_CRON", "0 3 * * *"),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)

defs = dg.Definitions(
    assets=[*data_assets, *training_assets],
    asset_checks=DATA_CHECKS,
    resources={"store": ArtifactStore(), "sandbox": SandboxResource()},
    jobs=[all_assets_job, data_refresh_job],
    schedules=[data_refresh_schedule],
)
