"""The data stages end to end through Dagster: caching by content, crash safety, decontamination,
and a dataset that other tools read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from pipelines.assets import data
from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
from pipelines.storage import ArtifactStore

DATA_ASSETS = [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset]


def materialize(root: Path, ops: dict, instance: dg.DagsterInstance | None = None) -> dict:
    result = dg.materialize(
        DATA_ASSETS,
        resources={"store": ArtifactStore(root=str(root)), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                   "benchmark_files": BenchmarkFiles()},
        run_config={"ops": ops},
        instance=instance,
    )
    assert result.success
    return {
        event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
        for event in result.get_asset_materialization_events()
    }


def recomputed(metadata: dict) -> set[str]:
    return {asset for asset, meta in metadata.items() if not meta["reused"].value}


def generator(count: int, seed: int) -> dict:
    return {"raw_programs": {"config": {"generator_count": count, "generator_seed": seed}}}


def test_only_what_changed_is_recomputed(tmp_path, dagster_instance):
    everything = {"raw_programs", "instrumented_programs", "execution_traces", "trace_dataset"}
    store = tmp_path / "store"
    first = materialize(store, generator(60, 3), dagster_instance)
    assert recomputed(first) == everything
    assert first["execution_traces"]["executed_programs"].value == 60

    unchanged = materialize(store, generator(60, 3), dagster_instance)
    assert recomputed(unchanged) == set()
    assert unchanged["execution_traces"]["executed_programs"].value == 0
    for asset in everything:
        assert unchanged[asset]["cache_key"] == first[asset]["cache_key"]

    filters_only = materialize(store, {**generator(60, 3), "trace_dataset": {"config": {"val_fraction": 0.5}}},
                               dagster_instance)
    assert recomputed(filters_only) == {"trace_dataset"}

    new_seed = materialize(store, generator(60, 4), dagster_instance)
    assert recomputed(new_seed) == everything

    # The instance kept all four runs and every materialization, in order.
    assert len(dagster_instance.get_runs()) == 4
    history = dagster_instance.fetch_materializations(dg.AssetKey("trace_dataset"), limit=10).records
    assert [record.asset_materialization.metadata["cache_key"] for record in history] == [
        run["trace_dataset"]["cache_key"] for run in (new_seed, filters_only, unchanged, first)]


def test_planted_cruxeval_program_is_dropped_as_contamination(tmp_path, cruxeval_rows):
    planted = tmp_path / "planted.jsonl"
    rows = [{"id": f"planted-{row['id']}", **{k: row[k] for k in ("code", "input", "output")}} for row in cruxeval_rows[:3]]
    planted.write_text("".join(json.dumps(row) + "\n" for row in rows))
    meta = materialize(tmp_path / "store", {"raw_programs": {"config": {"generator_count": 40, "files": [str(planted)]}}})
    dataset = meta["trace_dataset"]
    assert dataset["drop_reasons"].value.get("contaminated") == 3
    assert dataset["contaminated_by"].value == {"cruxeval": 3}
    kept = pq.read_table(dataset["train_parquet"].value).column("program_id").to_pylist()
    assert not any(pid.startswith("planted-") for pid in kept)


def test_dataset_reads_with_pandas_duckdb_and_datasets(tmp_path):
    meta = materialize(tmp_path, generator(80, 5))
    train = Path(meta["trace_dataset"]["train_parquet"].value)
    tasks = train.parent / "tasks" / "train.parquet"
    # A fresh interpreter that never imports stepcode: the files stand on their own.
    reader = textwrap.dedent(f"""
        import sys, pandas, duckdb, datasets
        frame = pandas.read_parquet({str(train)!r})
        assert set(["program_id", "source", "code", "instrumented_code", "input", "output", "steps", "split"]) <= set(frame.columns)
        assert (frame["split"] == "train").all() and len(frame) > 0
        assert isinstance(frame["steps"].iloc[0][0]["name"], str)
        count = duckdb.sql("select count(*) from read_parquet('{tasks}') where task in ('output', 'input')").fetchall()[0][0]
        assert count == 2 * len(frame), (count, len(frame))
        loaded = datasets.load_dataset("parquet", data_files={{"train": {str(train)!r}}}, split="train")
        assert loaded.num_rows == len(frame)
        assert not any(name.startswith(("stepcode", "pipelines", "sandbox")) for name in sys.modules)
        print("ok", len(frame))
    """)
    done = subprocess.run([sys.executable, "-I", "-c", reader], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("ok")


def test_splits_are_stable_across_reruns(tmp_path):
    first = materialize(tmp_path / "a", generator(50, 6))
    second = materialize(tmp_path / "b", generator(50, 6))
    read = lambda meta: pq.read_table(meta["trace_dataset"]["train_parquet"].value).column("program_id").to_pylist()
    assert read(first) == read(second)


# Runs on the instance at $DAGSTER_HOME, the test's instance.
_KILLABLE = """
import sys
import dagster as dg
from pipelines.assets import data
from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
from pipelines.storage import ArtifactStore
dg.materialize(
    [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset],
    resources={"store": ArtifactStore(root=sys.argv[1]), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
               "benchmark_files": BenchmarkFiles()},
    run_config={"ops": {"raw_programs": {"config": {"generator_count": 4000, "generator_seed": 9}},
                        "execution_traces": {"config": {"num_shards": 16}}}},
    instance=dg.DagsterInstance.get(),
)
"""


def _published_parquet(root: Path, asset: str) -> list[Path]:
    """Parquet files a reader would find: inside published artifact folders, not temp folders."""
    base = root / asset
    if not base.is_dir():
        return []
    return [p for folder in base.iterdir() if not folder.name.startswith(".") for p in folder.rglob("*.parquet")]


def test_kill_9_during_execution_leaves_no_partial_artifact(tmp_path, dagster_instance):
    root = tmp_path / "store"
    script = tmp_path / "killable.py"
    script.write_text(_KILLABLE)
    process = subprocess.Popen([sys.executable, str(script), str(root)], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = root / "execution_traces_shards"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if shards.is_dir() and any(not p.name.startswith(".") for p in shards.iterdir()):
                break
            assert process.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no shard finished within 240 s")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    assert _published_parquet(root, "execution_traces") == []
    assert _published_parquet(root, "trace_dataset") == []
    finished_before = {p.name for p in shards.iterdir() if not p.name.startswith(".")}
    assert 1 <= len(finished_before) < 16
    # The instance holds the killed run as it was: started, never finished, trace_dataset unrecorded.
    (killed,) = dagster_instance.get_runs()
    assert killed.status == dg.DagsterRunStatus.STARTED
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("trace_dataset")) is None

    meta = materialize(root, {"raw_programs": {"config": {"generator_count": 4000, "generator_seed": 9}},
                              "execution_traces": {"config": {"num_shards": 16}}}, dagster_instance)
    assert meta["trace_dataset"]["kept_programs"].value > 0
    # The shards finished before the kill were reused, not run again.
    assert meta["execution_traces"]["executed_programs"].value < 4000
    assert len(_published_parquet(root, "execution_traces")) == 16
    assert dagster_instance.get_latest_materialization_event(dg.AssetKey("trace_dataset")) is not None


def test_without_cross_check_determinism_comes_from_a_second_run_in_one_interpreter(tmp_path):
    meta = materialize(tmp_path, {**generator(40, 8), "execution_traces": {"config": {"cross_check": False}}})
    assert meta["execution_traces"]["determinism_rate"].value > 0.9
    assert meta["trace_dataset"]["kept_programs"].value > 30


def test_levels_are_recorded_counted_and_prompted_compactly(tmp_path):
    """Every row carries its generator level from raw_programs to the task rows; the dataset's
    metadata counts programs, anchor lines and prompt tokens per level; compact prompts are the
    default and the full ones one setting away."""
    ops = {"raw_programs": {"config": {"generator_count": 80, "generator_seed": 2, "generator_levels": [1, 2, 3, 4]}}}
    meta = materialize(tmp_path, ops)
    assert meta["raw_programs"]["levels"].data == {"1": 20, "2": 20, "3": 20, "4": 20}
    dataset = Path(str(meta["trace_dataset"]["artifact"].value))
    stored = json.loads((dataset / "meta.json").read_text())["metadata"]["levels"]
    assert set(stored) == {"1", "2", "3", "4"}
    assert sum(level["programs"] for level in stored.values()) == meta["trace_dataset"]["kept_programs"].value
    anchors = [stored[level]["mean_anchor_lines"] for level in ("1", "2", "4")]
    assert anchors == sorted(anchors) and anchors[0] < anchors[-1]  # harder levels trace more states
    tokens = [stored[level]["mean_prompt_tokens"] for level in ("1", "2", "3", "4")]
    assert tokens == sorted(tokens)
    assert "| 1 |" in meta["trace_dataset"]["levels"].value  # the per-level table in the UI
    for split in ("train", "val"):
        programs = pq.read_table(dataset / f"{split}.parquet").to_pylist()
        tasks = pq.read_table(dataset / "tasks" / f"{split}.parquet").to_pylist()
        assert all(row["level"] in (1, 2, 3, 4) for row in programs + tasks)
        assert all("Trace `f(" in row["prompt"] or "Find x with" in row["prompt"] for row in tasks)

    full = materialize(tmp_path, {**ops, "trace_dataset": {"config": {"prompt_style": "full"}}})
    assert recomputed(full) == {"trace_dataset"}
    full_levels = json.loads((Path(str(full["trace_dataset"]["artifact"].value)) / "meta.json").read_text())
    assert all(full_levels["metadata"]["levels"][k]["mean_prompt_tokens"] > stored[k]["mean_prompt_tokens"]
               for k in stored)
    with pytest.raises(dg.Failure, match="prompt_style"):
        dg.materialize(DATA_ASSETS, resources={"store": ArtifactStore(root=str(tmp_path)),
                                               "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                                               "benchmark_files": BenchmarkFiles()},
                       run_config={"ops": {**ops, "trace_dataset": {"config": {"prompt_style": "short"}}}})


def test_without_reference_data_the_dataset_says_what_it_was_not_checked_against(tmp_path, cruxeval_data):
    """No reference data: the data stages still run; the dataset records that it was not checked
    against CRUXEval and REval and the contamination check warns (never a silent pass). Once the data
    is imported, the dataset is rebuilt (the evaluation files are part of its key) and checked."""
    from pipelines import checks
    from stepcode_core.data.reference import import_folder

    empty = tmp_path / "reference"

    def run() -> tuple[dict, dg.AssetCheckEvaluation]:
        result = dg.materialize(
            [*DATA_ASSETS, checks.trace_dataset_not_contaminated],
            resources={"store": ArtifactStore(root=str(tmp_path / "store")), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                       "benchmark_files": BenchmarkFiles(reference_data=str(empty))},
            run_config={"ops": generator(30, 7)})
        assert result.success
        (check,) = result.get_asset_check_evaluations()
        metadata = {event.asset_key.to_user_string(): event.step_materialization_data.materialization.metadata
                    for event in result.get_asset_materialization_events()}
        return metadata["trace_dataset"], check

    dataset, check = run()
    assert dataset["not_checked_against"].value == ["cruxeval", "reval"]
    assert dataset["evaluation_sets"].value == {}
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "not checked against cruxeval, reval" in check.description and "stepcode data fetch" in check.description

    import_folder(cruxeval_data, empty, report=lambda line: None)
    dataset_after, check_after = run()
    assert not dataset_after["reused"].value
    assert dataset_after["not_checked_against"].value == []
    assert set(dataset_after["evaluation_sets"].value) == {"cruxeval", "reval"}
    assert check_after.passed and check_after.description is None
