"""Blocking data checks: a dataset that fails one never reaches training, in the same run or a later
one, and the reason is recorded where the UI shows it. Real data stages, a real local sandbox, a real
Dagster instance."""

from __future__ import annotations


import dagster as dg

from pipelines.assets import data
from pipelines.checks import DATA_CHECKS
from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
from pipelines.storage import ArtifactStore
from pipelines.verdicts import BLOCKING_CHECKS

DATA_ASSETS = [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset]


def test_every_data_check_blocks_and_training_consults_each():
    for check in DATA_CHECKS:
        for spec in check.check_specs:
            assert spec.blocking, spec.key
    declared = {(key.asset_key.to_user_string(), key.name) for check in DATA_CHECKS for key in check.check_keys}
    assert declared == {(asset, name) for asset, names in BLOCKING_CHECKS.items() for name in names}


def test_a_contaminated_dataset_never_reaches_sft_checkpoint(tmp_path, contaminated_training):
    assets, resources, run_config = contaminated_training
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        # One run, data and training: the failed check stops it before sft_checkpoint starts.
        result = dg.materialize([*assets, *DATA_CHECKS], instance=instance, resources=resources,
                                run_config=run_config, raise_on_error=False)
        assert not result.success
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert "trace_dataset" in materialized and "sft_checkpoint" not in materialized
        verdicts = {e.event_specific_data.check_name: e.event_specific_data
                    for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
        contamination = verdicts["trace_dataset_not_contaminated"]
        assert not contamination.passed and contamination.severity == dg.AssetCheckSeverity.ERROR
        assert contamination.metadata["contaminated"].value == 2
        assert "overlap an evaluation set" in contamination.description
        assert all(verdicts[name].passed for name in verdicts if name != "trace_dataset_not_contaminated")
        assert not (tmp_path / "store" / "sft_checkpoint").exists()  # no training process ever wrote there

        # The instance keeps the verdict, as the UI shows it on trace_dataset's checks tab.
        key = dg.AssetCheckKey(dg.AssetKey("trace_dataset"), "trace_dataset_not_contaminated")
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        assert record.evaluation is not None and not record.evaluation.passed

        # A later run of sft_checkpoint alone, on the same dataset: refused, saying why.
        again = dg.materialize(assets, selection=["sft_checkpoint"], instance=instance, resources=resources,
                               run_config={"ops": {"sft_checkpoint": run_config["ops"]["sft_checkpoint"]}},
                               raise_on_error=False)
        assert not again.success
        (failure,) = [e for e in again.all_events if e.event_type_value == "STEP_FAILURE"]
        reason = failure.event_specific_data.error.message
        assert "trace_dataset_not_contaminated failed" in reason and "2 of" in reason
        assert not (tmp_path / "store" / "sft_checkpoint").exists()


def test_a_clean_dataset_passes_every_check(tmp_path):
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                 "benchmark_files": BenchmarkFiles()}
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        result = dg.materialize([*DATA_ASSETS, *DATA_CHECKS], instance=instance, resources=resources,
                                run_config={"ops": {"raw_programs": {"config": {"generator_count": 24}}}})
        assert result.success
        verdicts = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        assert len(verdicts) == len(DATA_CHECKS) and all(v.passed for v in verdicts)


def _materialize_files(tmp_path, *files) -> dg.ExecuteInProcessResult:
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                 "benchmark_files": BenchmarkFiles()}
    (tmp_path / "instance").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
        return dg.materialize([*DATA_ASSETS, *DATA_CHECKS], instance=instance, resources=resources,
                              run_config={"ops": {"raw_programs": {"config": {"generator_count": 0,
                                                                              "files": [str(f) for f in files]}},
                                                  "trace_dataset": {"config": {"max_anchor_lines": 100}}}},
                              raise_on_error=False)


def test_class_heavy_programs_through_the_files_source_pass_every_check(tmp_path):
    """Classes with dunder methods, closures, generators, default reprs, as scripts (a folder) and as
    functions with inputs (JSONL in CRUXEval's schema): all deterministic, all kept (the anchor cap
    raised), every check passing."""
    import json
    import textwrap

    from tests.core.tricky_programs import FUNCTIONS, PROGRAMS

    folder = tmp_path / "programs"
    folder.mkdir()
    for name, source in PROGRAMS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    functions = tmp_path / "functions.jsonl"
    functions.write_text("".join(json.dumps({"id": name, "code": code.lstrip(), "input": call}) + "\n"
                                 for name, (code, call) in FUNCTIONS.items()))
    result = _materialize_files(tmp_path, folder, functions)
    assert result.success
    verdicts = {e.event_specific_data.check_name: e.event_specific_data
                for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert all(v.passed for v in verdicts.values()), {k: v.description for k, v in verdicts.items() if not v.passed}
    dataset = [e.step_materialization_data.materialization.metadata for e in result.get_asset_materialization_events()
               if e.asset_key.to_user_string() == "trace_dataset"][0]
    assert dataset["kept_programs"].value == len(PROGRAMS) + len(FUNCTIONS), dataset["drop_reasons"].value


def test_the_determinism_check_names_the_programs_and_why(tmp_path):
    folder = tmp_path / "programs"
    folder.mkdir()
    (folder / "drawn.py").write_text("import random\nk = random.random()\n")
    (folder / "handle.py").write_text("class H:\n    def __repr__(self):\n        return hex(id(self))\nh = H()\n")
    (folder / "plain.py").write_text("x = 1\ny = x + 1\n")
    result = _materialize_files(tmp_path, folder)
    verdicts = {e.event_specific_data.check_name: e.event_specific_data
                for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}
    determinism = verdicts["execution_traces_determinism"]
    assert not determinism.passed
    assert "1 of 3 programs differ between two runs" in determinism.description
    assert "file:drawn.py: the runs differ in steps" in determinism.description
    assert determinism.metadata["unstable_repr"].value == 1  # handle.py: an address, not nondeterminism
