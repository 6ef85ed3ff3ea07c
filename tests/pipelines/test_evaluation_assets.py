"""Evaluation per checkpoint through Dagster: the checkpoint sensor registers a checkpoint as a
partition and evaluates it; a second checkpoint runs only its own partitions, the first's results
stay untouched; eval_report tabulates both. Real (tiny, random) Hugging Face checkpoints, the real
sandbox, a real Dagster instance."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from pipelines.assets import evaluation
from pipelines.checkpoints import CHECKPOINT_PARTITIONS, CheckpointRegistry
from pipelines.jobs import EVAL_ASSET_KEYS, eval_report_job, evaluation_job
from pipelines.resources import BenchmarkFiles, SandboxResource
from pipelines.sensors import checkpoint_sensor
from pipelines.storage import ArtifactStore
from stepcode_core.models import weights_hash

SMALL = {"max_new_tokens": 8, "engine": "transformers"}
LCB_ROW = {"id": "sample_0", "question_id": "q1", "problem_id": "q1", "contest_id": "c1", "contest_date": "2024-01-01", "difficulty": "easy",
           "function_name": "f", "code": "def f(a):\n    return a + 1", "input": "f(1)", "output": "2", "numsteps": 3}


def _run_config(lcb_path: Path) -> dict:
    return {"ops": {
        "eval_cruxeval": {"config": {"limit": 2, "modes": ["output"], "styles": ["direct"], "generation": SMALL}},
        "eval_livecodebench": {"config": {"path": str(lcb_path), "limit": 1, "generation": SMALL}},
        "eval_reval": {"config": {"limit": 1, "generation": SMALL}},
        "eval_trace_gap": {"config": {"limit": 2, "generation": SMALL}},
    }}


def _materializations(instance, asset: str, partition: str) -> list:
    return instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=100).records


def _tick(instance, registry) -> dg.SensorResult:
    result = checkpoint_sensor(dg.build_sensor_context(instance=instance, resources={"checkpoint_registry": registry}))
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


@pytest.mark.slow
def test_a_new_checkpoint_evaluates_only_its_own_partitions(tmp_path, tiny_trace_dataset, tiny_checkpoint, browser,
                                                             dagster_instance):
    external = tmp_path / "external"
    registry = CheckpointRegistry(registry_file=str(tmp_path / "checkpoints.json"), external_dir=str(external))
    lcb = tmp_path / "lcb.jsonl"
    lcb.write_text(json.dumps(LCB_ROW) + "\n")
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "checkpoint_registry": registry,
                 "sandbox": SandboxResource(backend="local", workers=2), "benchmark_files": BenchmarkFiles(),
                 "io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path / "io"))}
    defs = dg.Definitions(
        assets=[tiny_trace_dataset, evaluation.eval_cruxeval, evaluation.eval_livecodebench, evaluation.eval_reval,
                evaluation.eval_trace_gap, evaluation.eval_report],
        jobs=[evaluation_job, eval_report_job], resources=resources)
    job = defs.resolve_job_def("evaluation")

    instance = dagster_instance
    assert dg.materialize([tiny_trace_dataset], instance=instance, resources=resources).success

    def evaluate(result: dg.SensorResult) -> list[str]:
        keys = [request.partition_key for request in result.run_requests]
        for key in keys:
            assert job.execute_in_process(instance=instance, partition_key=key, run_config=_run_config(lcb)).success
        return keys

    first_dir = tiny_checkpoint(external / "first", seed=1)
    (first,) = evaluate(_tick(instance, registry))
    assert first == f"ext_first-{weights_hash(first_dir)[:12]}"
    assert _tick(instance, registry).run_requests == []  # nothing new: the sensor skips

    tiny_checkpoint(external / "second", seed=2)
    (second,) = evaluate(_tick(instance, registry))
    assert second.startswith("ext_second-") and second != first

    assert set(instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name)) == {first, second}
    for asset in EVAL_ASSET_KEYS:  # one run each: the first checkpoint was not evaluated again
        assert len(_materializations(instance, asset, first)) == 1, asset
        assert len(_materializations(instance, asset, second)) == 1, asset
    runs = instance.get_runs(dg.RunsFilter(job_name="evaluation"))
    assert sorted(run.tags["dagster/partition"] for run in runs) == sorted([first, second])

    # What the evaluation wrote: official files, numbers in range.
    crux = _materializations(instance, "eval_cruxeval", second)[0].asset_materialization.metadata
    folder = Path(str(crux["artifact"].value))
    scored = json.loads((folder / "output_direct_scored.json").read_text())
    assert set(scored) == {"raw_generations", "raw_scored_generations", "pass_at_1", "pass_at_5"}
    assert len(scored["raw_generations"]) == 2 and 0.0 <= scored["pass_at_1"] <= 100.0
    lcb_meta = _materializations(instance, "eval_livecodebench", second)[0].asset_materialization.metadata
    assert lcb_meta["summary"].data["problems"] == 1
    gap = _materializations(instance, "eval_trace_gap", second)[0].asset_materialization.metadata["summary"].data
    assert 0.0 <= gap["step_accuracy"] <= 100.0 and 0.0 <= gap["final_accuracy"] <= 100.0
    assert set(gap["by_task"]) == {"output", "input"} and gap["samples"] == sum(
        part["samples"] for part in gap["by_task"].values())

    # A training materialization is picked up too, keyed by its DataVersion.
    trained = tiny_checkpoint(tmp_path / "sft", seed=3)
    digest = weights_hash(trained)
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "sft_checkpoint", metadata={"model_dir": dg.MetadataValue.path(str(trained))},
        tags={"dagster/data_version": digest}))
    assert [r.partition_key for r in _tick(instance, registry).run_requests] == [f"sft_checkpoint-{digest[:12]}"]

    result = defs.resolve_job_def("eval_report_job").execute_in_process(instance=instance)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    report_meta = event.step_materialization_data.materialization.metadata
    assert sorted(report_meta["checkpoints"].data) == sorted([first, second])

    # report.json: each checkpoint's numbers with intervals and its per-sample page; the change
    # between them; the comparison page; every page renders in a real browser with its traces.
    content = json.loads(Path(str(report_meta["report_json"].value)).read_text())
    assert [e["label"] for e in content["checkpoints"]] == ["ext_first", "ext_second"]
    for entry in content["checkpoints"]:
        assert entry["trace_tasks"] == 4 and entry["key"] in (first, second)
        assert entry["trace_final_accuracy_ci"] is not None and entry["cruxeval"]["output_pass@1_ci"] is not None
        assert entry["reval"]["mean_ci"] is not None
        gap_meta = _materializations(instance, "eval_trace_gap", entry["key"])[0].asset_materialization.metadata
        assert str(gap_meta["samples_html"].value) == entry["samples_html"]
        browser.get(Path(entry["samples_html"]).as_uri())
        assert len(browser.find_elements("css selector", "section.sample")) == 4
        marks = gap_meta["summary"].data["marks"]
        for mark, count in marks.items():
            assert len(browser.find_elements("css selector", f"tr.step.{mark}")) == count
    (change,) = content["comparisons"]
    assert (change["from"], change["to"], change["tasks"]) == ("ext_first", "ext_second", 4)
    assert "step_accuracy_change_ci" in change and report_meta["verdicts"].value.startswith("- ext_second vs ext_first")
    browser.get(Path(str(report_meta["compare_html"].value)).as_uri())
    assert len(browser.find_elements("css selector", ".pair")) == 4


def test_an_external_checkpoint_changed_in_place_becomes_a_new_partition(tmp_path, tiny_checkpoint, dagster_instance):
    """Same folder, new weights: the sensor registers a new partition (its key names the new
    hash), and the old partition refuses to evaluate the weights that replaced its own."""
    external = tmp_path / "external"
    registry = CheckpointRegistry(registry_file=str(tmp_path / "checkpoints.json"), external_dir=str(external))
    instance = dagster_instance
    folder = tiny_checkpoint(external / "mine", seed=1)
    first = _tick(instance, registry)
    (old_key,) = [request.partition_key for request in first.run_requests]
    assert old_key == f"ext_mine-{weights_hash(folder)[:12]}"
    assert registry.resolve(old_key).model_dir == str(folder.resolve())
    assert not _tick(instance, registry).run_requests  # nothing changed: nothing to do

    tiny_checkpoint(folder, seed=2)  # retrained in place
    second = _tick(instance, registry)
    (new_key,) = [request.partition_key for request in second.run_requests]
    assert new_key != old_key and new_key == f"ext_mine-{weights_hash(folder)[:12]}"
    assert set(instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name)) == {old_key, new_key}
    assert registry.resolve(new_key).weights_hash == weights_hash(folder)
    with pytest.raises(dg.Failure, match="changed since it was registered"):
        registry.resolve(old_key)


def test_without_reference_data_cruxeval_and_reval_are_skipped_and_the_report_says_so(
        tmp_path, tiny_checkpoint, dagster_instance):
    """The embedded default needs no reference data: its evaluations materialize as skipped, with the
    command that fetches the data, and the report's table says so instead of showing a number."""
    registry = CheckpointRegistry(registry_file=str(tmp_path / "checkpoints.json"), external_dir=str(tmp_path / "ext"))
    tiny_checkpoint(tmp_path / "ext" / "mine", seed=1)
    (key,) = [request.partition_key for request in _tick(dagster_instance, registry).run_requests]
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "checkpoint_registry": registry,
                 "sandbox": SandboxResource(backend="local", workers=1),
                 "benchmark_files": BenchmarkFiles(reference_data=str(tmp_path / "no-reference-data"))}
    result = dg.materialize([evaluation.eval_cruxeval, evaluation.eval_reval], partition_key=key,
                            instance=dagster_instance, resources=resources)
    assert result.success
    summaries = {}
    for event in result.get_asset_materialization_events():
        metadata = event.step_materialization_data.materialization.metadata
        assert metadata["skipped"].value == "no reference data (run `stepcode data fetch`)"
        summaries[event.asset_key.to_user_string()] = metadata["summary"].data
    assert set(summaries) == {"eval_cruxeval", "eval_reval"}

    from stepcode_core.evaluation import report

    entry = report.checkpoint_entry(key, "ext_mine", summaries, None)
    assert entry["cruxeval"] == {"skipped": "no reference data (run `stepcode data fetch`)"}
    assert entry["reval"] == {"skipped": "no reference data (run `stepcode data fetch`)"}
    table = report.report_markdown({"checkpoints": [entry], "comparisons": []})
    assert "| skipped | skipped |" in table
    assert "- CRUXEval: skipped: no reference data (run `stepcode data fetch`)" in table
    assert "- REval: skipped: no reference data (run `stepcode data fetch`)" in table


def test_the_report_plot_draws_with_no_checkpoint_and_with_skipped_benchmarks(tmp_path):
    """No evaluated checkpoint yet (the report asset's first run), or CRUXEval and REval skipped: the
    plot still draws (dropping only the benchmarks that have no number)."""
    entry = {"label": "base_model", "key": "base_model-0123456789ab", "trace_step_accuracy": 0.3,
             "trace_step_accuracy_ci": [0.2, 0.4], "trace_final_accuracy": 0.25, "trace_final_accuracy_ci": None,
             "cruxeval": {"skipped": "no reference data (run `stepcode data fetch`)"}, "reval": None}
    for name, entries in (("empty", []), ("skipped", [entry])):
        evaluation._plot_report({"checkpoints": entries}, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
