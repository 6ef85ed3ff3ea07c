"""The Dagster code location: `dagster dev -m pipelines.definitions` (or `stepcode ui`)."""

from __future__ import annotations

import dagster as dg

from pipelines.assets import data
from pipelines.instance import configure_environment
from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactStore

configure_environment()

data_assets = dg.load_assets_from_modules([data])

all_assets_job = dg.define_asset_job("stepcode_all", selection=dg.AssetSelection.all(),
                                     description="Materialize every asset (what `make demo` runs).")

defs = dg.Definitions(
    assets=[*data_assets],
    resources={"store": ArtifactStore(), "sandbox": SandboxResource()},
    jobs=[all_assets_job],
)
