"""Shared by the pipeline tests: stand-ins (a small trace_dataset, tiny random checkpoints) and the
Dagster instances the instance-level tests run against (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.assets import data, training
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import BenchmarkFiles, MlflowTracking, SandboxResource, TraceRunner
from pipelines.storage import ArtifactRef, ArtifactStore
from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.training.tiny_task import tiny_task_rows


@dg.asset(name="trace_dataset", group_name="data")
def _tiny_trace_dataset(store: ArtifactStore, sandbox: SandboxResource) -> dg.Output:
    """Stands in for the data stages: the small trace task, in trace_dataset's layout."""
    folder = Path(store.root_path()) / "tiny_trace_dataset"
    if not (folder / "tasks" / "val.parquet").is_file():
        (folder / "tasks").mkdir(parents=True, exist_ok=True)
        with sandbox.open() as opened:
            rows = tiny_task_rows(12, 5, opened, kinds=("output", "input"))
        for split, part in (("train", rows[:20]), ("val", rows[20:])):
            pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k not in ("code", "policy")} for r in part]),
                           folder / "tasks" / f"{split}.parquet")
            programs = {r["program_id"]: {"program_id": r["program_id"], "code": r["code"]} for r in part}
            pq.write_table(pa.Table.from_pylist(list(programs.values())), folder / f"{split}.parquet")
    return dg.Output(ArtifactRef("trace_dataset", "tiny", str(folder), "tiny-v1"), data_version=dg.DataVersion("tiny-v1"))


@pytest.fixture(scope="session")
def tiny_trace_dataset():
    return _tiny_trace_dataset


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """``make(folder, seed)``: a randomly initialised one-layer Llama with SmolLM2's tokenizer, saved
    as a Hugging Face folder. Real weights and a real tokenizer, small enough that evaluating it
    costs seconds; the seed decides the weights (and so the checkpoint's hash)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(materialize_embedded_model(stepcode_home() / "models"))

    def make(folder: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                             tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return make


@pytest.fixture
def contaminated_training(tmp_path, cruxeval_rows, tiny_checkpoint):
    """``(assets, resources, run_config)`` of a run that trains on a contaminated dataset: the data
    stages on 16 generated programs plus two CRUXEval programs planted as a source, with the
    dataset's own decontamination filter off (as a careless config would leave it), then
    ``sft_checkpoint`` from a tiny base model. The artifacts go under ``tmp_path / "store"``."""
    planted = tmp_path / "planted.jsonl"
    rows = [{"id": f"planted-{row['id']}", **{k: row[k] for k in ("code", "input", "output")}} for row in cruxeval_rows[:2]]
    planted.write_text("".join(json.dumps(row) + "\n" for row in rows))
    base = tiny_checkpoint(tmp_path / "base", seed=0)
    resources = {"store": ArtifactStore(root=str(tmp_path / "store")), "trace_runner": TraceRunner(), "sandbox": SandboxResource(backend="local"),
                 "benchmark_files": BenchmarkFiles(), "training_launcher": LocalTrainingLauncher(),
                 "mlflow_tracking": MlflowTracking()}
    run_config = {"ops": {
        "raw_programs": {"config": {"generator_count": 16, "files": [str(planted)]}},
        "trace_dataset": {"config": {"contamination_threshold": 1.01}},
        "base_model": {"config": {"source": str(base)}},
        "sft_checkpoint": {"config": {"preset": "cpu-smoke", "max_tasks": 4, "eval_tasks": 1}},
    }}
    assets = [data.raw_programs, data.instrumented_programs, data.execution_traces, data.trace_dataset,
              training.base_model, training.sft_checkpoint]
    return assets, resources, run_config


# ---- Dagster instances: the checkout's (SQLite) and the deployment's (PostgreSQL) ----------------

PROJECT_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_URL_VARIABLE = "STEPCODE_TEST_POSTGRES_URL"


def _instance_from_yaml(yaml_file: Path, home: Path, monkeypatch, **env: str) -> dg.DagsterInstance:
    """The instance that ``yaml_file`` describes, loaded the way a deployment loads it: DAGSTER_HOME
    is a folder holding a copy of the file. The variables go into this process's environment, so
    the subprocesses a test starts (``DagsterInstance.get()``) open the same instance."""
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml_file.read_text())
    for name, value in {"DAGSTER_HOME": str(home), "STEPCODE_DAGSTER_DIR": str(home / "storage"),
                        "STEPCODE_DAGSTER_LOGS": str(home / "logs"), **env}.items():
        monkeypatch.setenv(name, value)
    return dg.DagsterInstance.get()


def _drop_database(admin, name: str, attempts: int = 10) -> None:
    """FORCE ends a session a killed run process left behind. Ending an autovacuum worker on the
    database needs pg_signal_backend (ensure_postgres.sh grants it); a server set up without that
    grant refuses, so wait for the worker to finish instead."""
    import psycopg2

    for attempt in range(attempts):
        try:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except psycopg2.errors.InsufficientPrivilege:
            if attempt == attempts - 1:
                raise
            time.sleep(1.0)


@pytest.fixture
def postgres_database():
    """A fresh, empty PostgreSQL database for one test (dropped afterwards), as the variables that
    deploy/dagster.yaml reads. The server is $STEPCODE_TEST_POSTGRES_URL, a role that may create
    databases (scripts/ensure_postgres.sh sets one up for `make test`). Without it the test skips,
    except under CI, where it fails."""
    from urllib.parse import unquote, urlsplit

    import psycopg2

    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        message = f"${POSTGRES_URL_VARIABLE} is not set (scripts/ensure_postgres.sh provides a server)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    parts = urlsplit(url)
    name = f"stepcode_test_{uuid.uuid4().hex[:16]}"
    admin = psycopg2.connect(url)
    admin.autocommit = True  # CREATE/DROP DATABASE refuse to run inside a transaction
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield {"STEPCODE_POSTGRES_USER": unquote(parts.username or ""),
               "STEPCODE_POSTGRES_PASSWORD": unquote(parts.password or ""),
               "STEPCODE_POSTGRES_HOST": parts.hostname or "127.0.0.1",
               "STEPCODE_POSTGRES_PORT": str(parts.port or 5432),
               "STEPCODE_POSTGRES_DB": name}
        _drop_database(admin, name)
    finally:
        admin.close()


@pytest.fixture
def deploy_instance(tmp_path, monkeypatch, postgres_database):
    """The production instance, built from deploy/dagster.yaml itself, on a fresh database."""
    instance = _instance_from_yaml(PROJECT_ROOT / "deploy" / "dagster.yaml", tmp_path / "dagster_home",
                                   monkeypatch, **postgres_database)
    try:
        yield instance
    finally:
        instance.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dagster_instance(request, tmp_path, monkeypatch):
    """A persistent Dagster instance, once per kind: ``sqlite`` is the checkout's dagster.yaml,
    ``postgres`` the deployment's deploy/dagster.yaml. DAGSTER_HOME points at it for the test."""
    if request.param == "postgres":
        yield request.getfixturevalue("deploy_instance")
        return
    instance = _instance_from_yaml(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster_home", monkeypatch)
    try:
        yield instance
    finally:
        instance.dispose()
