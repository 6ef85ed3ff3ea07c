"""Resources per deployment: one variable picks the set, Dagster's EnvVar fills it, and no asset body
reads the environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.checkpoints import CheckpointRegistry
from pipelines.deployments import DEPLOYMENTS, resources_for
from pipelines.resources import BenchmarkFiles, SandboxResource, TraceRunner
from pipelines.storage import ArtifactStore

ASSETS_DIR = Path(__file__).resolve().parents[2] / "pipelines" / "assets"


@dg.asset
def where_things_go(store: ArtifactStore, sandbox: SandboxResource, checkpoint_registry: CheckpointRegistry,
                    benchmark_files: BenchmarkFiles) -> dict:
    return {"artifacts": str(store.root_path()), "backend": sandbox.backend,
            "external": str(checkpoint_registry.external_path()), "livecodebench": benchmark_files.livecodebench,
            "reference_data": str(benchmark_files.reference_dir())}


def _resolved(resources: dict) -> dict:
    result = dg.materialize([where_things_go], resources=resources)
    assert result.success
    return result.output_for_node("where_things_go")


def test_local_is_the_default_and_needs_no_variable(monkeypatch, tmp_path):
    for name in ("STEPCODE_ARTIFACTS", "STEPCODE_EXTERNAL_CHECKPOINTS", "STEPCODE_LIVECODEBENCH", "STEPCODE_SANDBOX_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STEPCODE_HOME", str(tmp_path))
    monkeypatch.setenv("STEPCODE_REFERENCE_DATA", str(tmp_path / "reference"))
    found = _resolved(resources_for("local"))
    assert found == {"artifacts": str(tmp_path / "artifacts"), "backend": "auto",
                     "external": str(tmp_path / "checkpoints"), "livecodebench": "",
                     "reference_data": str(tmp_path / "reference")}


def test_production_reads_its_variables_when_a_run_starts(monkeypatch, tmp_path):
    resources = resources_for("production")  # built before the variables exist: EnvVar defers them
    monkeypatch.setenv("STEPCODE_ARTIFACTS", str(tmp_path / "shared" / "artifacts"))
    monkeypatch.setenv("STEPCODE_EXTERNAL_CHECKPOINTS", str(tmp_path / "shared" / "checkpoints"))
    monkeypatch.setenv("STEPCODE_REFERENCE_DATA", str(tmp_path / "shared" / "reference"))
    found = _resolved(resources)
    assert found["artifacts"] == str(tmp_path / "shared" / "artifacts")
    assert found["reference_data"] == str(tmp_path / "shared" / "reference")
    assert found["external"] == str(tmp_path / "shared" / "checkpoints")
    assert found["backend"] == "docker"  # untrusted code never runs outside a container there


@pytest.mark.parametrize("missing", ["STEPCODE_ARTIFACTS", "STEPCODE_EXTERNAL_CHECKPOINTS", "STEPCODE_REFERENCE_DATA"])
def test_production_without_its_variables_fails_naming_them(monkeypatch, tmp_path, missing):
    for name in ("STEPCODE_ARTIFACTS", "STEPCODE_EXTERNAL_CHECKPOINTS", "STEPCODE_REFERENCE_DATA"):
        monkeypatch.setenv(name, str(tmp_path))
    monkeypatch.delenv(missing)
    with pytest.raises(Exception, match=missing):
        dg.materialize([where_things_go], resources=resources_for("production"))


def test_the_variable_chooses_the_set_of_the_code_location(tmp_path):
    probe = ("from pipelines.definitions import defs; r = defs.resources; "
             "print(r['sandbox'].backend, type(r['store'].root).__name__)")
    env = {"PATH": "/usr/bin:/bin", "STEPCODE_HOME": str(tmp_path)}
    for deployment, expected in (("local", "auto str"), ("production", "docker EnvVar")):
        shown = subprocess.run([sys.executable, "-c", probe], env={**env, "STEPCODE_DEPLOYMENT": deployment},
                               capture_output=True, text=True, check=True, cwd=ASSETS_DIR.parents[1])
        assert shown.stdout.split()[-2:] == expected.split(), deployment
    wrong = subprocess.run([sys.executable, "-c", probe], env={**env, "STEPCODE_DEPLOYMENT": "staging"},
                           capture_output=True, text=True, cwd=ASSETS_DIR.parents[1])
    assert wrong.returncode != 0 and all(name in wrong.stderr for name in DEPLOYMENTS)


# The project's helpers that resolve a location from the environment: an asset asks a resource instead.
ENVIRONMENT_HELPERS = ("stepcode_home", "reference_data_dir", "cruxeval_path", "reval_dir")


@pytest.mark.parametrize("module", [*sorted(ASSETS_DIR.glob("*.py")), ASSETS_DIR.parent / "checks.py"],
                         ids=lambda path: path.name)
def test_no_asset_module_reads_the_environment(module):
    tree = ast.parse(module.read_text())
    reads = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb")
             or isinstance(node, ast.Name) and node.id in ("environ", "getenv", *ENVIRONMENT_HELPERS)
             or isinstance(node, ast.ImportFrom) and node.module == "os"
             and any(alias.name in ("environ", "getenv") for alias in node.names)]
    assert reads == [], f"{module.name} reads the environment at lines {reads}: take it from a resource"


@dg.asset
def where_shards_run(trace_runner: TraceRunner) -> dict:
    return trace_runner.describe()


def test_shards_are_traced_on_this_machine_unless_ray_is_chosen(monkeypatch):
    for name in ("STEPCODE_TRACE_RUNNER", "STEPCODE_RAY_ADDRESS", "STEPCODE_RAY_CPUS", "STEPCODE_RAY_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    assert type(resources_for("local")["trace_runner"]) is TraceRunner
    assert type(resources_for("production")["trace_runner"]) is TraceRunner
    monkeypatch.setenv("STEPCODE_TRACE_RUNNER", "spark")
    with pytest.raises(ValueError, match="STEPCODE_TRACE_RUNNER must be one of local, ray"):
        resources_for("local")


@pytest.mark.ray
def test_ray_is_a_local_cluster_or_the_one_at_an_address(monkeypatch, ray_installed):
    from dagster_ray import LocalRay

    from pipelines.ray_runner import RayAddress, RayTraceRunner

    monkeypatch.setenv("STEPCODE_TRACE_RUNNER", "ray")
    monkeypatch.setenv("STEPCODE_RAY_CPUS", "2")
    monkeypatch.setenv("STEPCODE_RAY_WORKERS", "3")
    monkeypatch.delenv("STEPCODE_RAY_ADDRESS", raising=False)
    runner = resources_for("local")["trace_runner"]
    assert isinstance(runner, RayTraceRunner) and isinstance(runner.ray_cluster, LocalRay)
    assert runner.ray_cluster.ray_init_options["num_cpus"] == 2 and runner.workers == 3
    monkeypatch.setenv("STEPCODE_RAY_ADDRESS", "ray://stepcode-tracing-head-svc:10001")
    runner = resources_for("local")["trace_runner"]
    assert isinstance(runner.ray_cluster, RayAddress)
    assert runner.ray_cluster.ray_address == "ray://stepcode-tracing-head-svc:10001"
    assert runner.ray_cluster.host == "stepcode-tracing-head-svc"


@pytest.mark.ray
def test_production_on_ray_needs_the_clusters_address_when_a_run_starts(monkeypatch, ray_installed):
    monkeypatch.setenv("STEPCODE_TRACE_RUNNER", "ray")
    monkeypatch.delenv("STEPCODE_RAY_ADDRESS", raising=False)
    resources = resources_for("production")  # no cluster started here: the address is read at run start
    with pytest.raises(Exception, match="STEPCODE_RAY_ADDRESS"):
        dg.materialize([where_shards_run], resources={"trace_runner": resources["trace_runner"]})
