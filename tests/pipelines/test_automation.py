"""eval_report follows the evaluations declaratively: its automation condition, evaluated against a
real instance, requests it once after a checkpoint's evaluation, and not again until another."""

from __future__ import annotations

import dagster as dg

from pipelines.checkpoints import CHECKPOINT_PARTITIONS
from pipelines.definitions import defs
from pipelines.jobs import EVAL_ASSET_KEYS


def _evaluated(instance: dg.DagsterInstance, partition: str) -> None:
    """What an evaluation run leaves in the instance: every eval asset materialized for a partition."""
    for asset in EVAL_ASSET_KEYS:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def _requested(result) -> set[str]:
    return {r.key.to_user_string() for r in result.results if r.true_subset.size}


def test_eval_report_is_requested_once_after_each_evaluation():
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS.name, ["base-aaaaaaaaaaaa", "sft-bbbbbbbbbbbb"])
    selection = dg.AssetSelection.assets("eval_report")

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert first.total_requested == 0  # nothing evaluated yet

    _evaluated(instance, "base-aaaaaaaaaaaa")
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                               cursor=first.cursor)
    assert second.total_requested == 1 and _requested(second) == {"eval_report"}

    # Requested already: the same evaluation does not request it again (the sibling partition is
    # still missing, which does not hold the report back).
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                              cursor=second.cursor)
    assert third.total_requested == 0

    _evaluated(instance, "sft-bbbbbbbbbbbb")
    fourth = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection,
                                               cursor=third.cursor)
    assert fourth.total_requested == 1


def test_the_automation_sensor_runs_by_default_and_targets_eval_report():
    sensor = defs.resolve_sensor_def("eval_report_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.asset_selection.resolve(defs.resolve_asset_graph()) == {dg.AssetKey("eval_report")}
    # The data refresh stays a schedule, off until a person turns it on.
    schedule = defs.resolve_schedule_def("data_refresh_schedule")
    assert schedule.job_name == "data_refresh" and schedule.default_status == dg.DefaultScheduleStatus.STOPPED
