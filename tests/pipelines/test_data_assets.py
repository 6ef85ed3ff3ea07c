"""The data assets through Dagster itself: materialization, content versions, reuse of artifacts."""

from __future__ import annotations

import dagster as dg
import pyarrow.parquet as pq
import pytest

from pipelines.assets import data
from pipelines.storage import ArtifactStore


def _materialize(store_root, run_config=None):
    return dg.materialize(
        [data.raw_programs, data.instrumented_programs],
        resources={"store": ArtifactStore(root=str(store_root))},
        run_config=run_config or {},
    )


def _metadata(result, asset):
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.step_materialization_data.materialization.metadata


def test_materialize_writes_parquet_with_anchors(tmp_path):
    result = _materialize(tmp_path, {"ops": {"raw_programs": {"config": {"generator_count": 30, "generator_seed": 7}}}})
    assert result.success
    meta = _metadata(result, "instrumented_programs")
    table = pq.read_table(f"{meta['artifact'].value}/data.parquet")
    assert table.num_rows == 30
    assert table.schema.field("anchor_sites").type.value_type.names == ["name", "line", "instrumented_line", "in_loop"]
    rows = table.to_pylist()
    assert all(row["instrumented_code"] and "print(f'return: " in row["instrumented_code"] for row in rows)
    assert meta["failed"].value == 0


def test_unknown_policy_fails_clearly(tmp_path):
    with pytest.raises(dg.Failure, match="unknown anchor policy 'sparse'"):
        _materialize(tmp_path, {"ops": {"instrumented_programs": {"config": {"policy": "sparse"}}}})


def test_definitions_load():
    from pipelines.definitions import defs

    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert {"raw_programs", "instrumented_programs", "execution_traces", "trace_dataset"} <= keys
    assert defs.resolve_job_def("stepcode_all") is not None
    schedule = defs.resolve_schedule_def("data_refresh_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.job_name == "data_refresh"


@pytest.mark.slow
def test_base_model_asset_versions_the_weights(tmp_path):
    from pipelines.assets.training import base_model

    result = dg.materialize([base_model], resources={"store": ArtifactStore(root=str(tmp_path))})
    (event,) = result.get_asset_materialization_events()
    materialization = event.step_materialization_data.materialization
    model_dir = materialization.metadata["model_dir"].value
    assert materialization.tags["dagster/data_version"] == materialization.metadata["weights_hash"].value
    assert model_dir.endswith("SmolLM2-135M-Instruct")
    with pytest.raises(dg.Failure, match="not a Hugging Face model folder"):
        dg.materialize([base_model], resources={"store": ArtifactStore(root=str(tmp_path))},
                       run_config={"ops": {"base_model": {"config": {"source": str(tmp_path)}}}})
