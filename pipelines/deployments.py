"""Resource sets per deployment, chosen by one environment variable, ``$STEPCODE_DEPLOYMENT``.

* ``local`` (the default): everything under ``$STEPCODE_HOME`` in the checkout, the sandbox's backend
  chosen at run time (Docker when a daemon answers, else the local one), training on this machine.
  Every setting is optional; the variables below override the defaults when set.
  ``$STEPCODE_TRACE_RUNNER=ray`` traces on Ray: a local cluster started for the step
  (``$STEPCODE_RAY_CPUS`` CPUs, default all), or the cluster at ``$STEPCODE_RAY_ADDRESS`` when set.
  ``$STEPCODE_MLFLOW_TRACKING_URI`` (both deployments; unset: no MLflow) logs each training run to
  MLflow, in the experiment ``$STEPCODE_MLFLOW_EXPERIMENT`` (default ``stepcode``).
* ``production``: a shared deployment (``deploy/dagster.yaml``, PostgreSQL). Artifacts and external
  checkpoints live on shared storage named by required variables; untrusted code runs only in
  Docker. ``$STEPCODE_TRACE_RUNNER=ray`` traces on the Ray cluster at ``$STEPCODE_RAY_ADDRESS`` (a
  KubeRay cluster's head service). Required variables are Dagster ``EnvVar`` s: read when a run starts, shown as such in the UI,
  and a run that lacks one fails naming it.

Environment read here, once, when the code location loads, so no asset body reads it.
"""

from __future__ import annotations

import dagster as dg

from pipelines.checkpoints import CheckpointRegistry
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import BenchmarkFiles, MlflowTracking, SandboxResource, TraceRunner
from pipelines.storage import ArtifactStore
from stepcode_core.data.reference import REFERENCE_DATA_VARIABLE

DEPLOYMENT_VARIABLE = "STEPCODE_DEPLOYMENT"
DEPLOYMENTS = ("local", "production")
TRACE_RUNNERS = ("local", "ray")
# A local Ray cluster sized for a laptop: Ray's default object store takes 30% of memory, and
# shards and traces pass through it one at a time.
LOCAL_RAY_OBJECT_STORE_MB = 256


def _optional(name: str, default: str = "") -> str:
    return dg.EnvVar(name).get_value(default) or default


def trace_runner(production: bool = False) -> TraceRunner:
    """``$STEPCODE_TRACE_RUNNER``: ``local`` (the default: this machine's sandbox pool) or ``ray``."""
    choice = _optional("STEPCODE_TRACE_RUNNER", "local")
    if choice not in TRACE_RUNNERS:
        raise ValueError(f"$STEPCODE_TRACE_RUNNER must be one of {', '.join(TRACE_RUNNERS)}, got {choice!r}")
    if choice == "local":
        return TraceRunner()
    try:
        from dagster_ray import LocalRay

        from pipelines.ray_runner import RayAddress, RayTraceRunner
    except ImportError as exc:
        raise ImportError(f"$STEPCODE_TRACE_RUNNER=ray needs the ray extra: pip install -e '.[ray]' ({exc})") from exc
    address = dg.EnvVar("STEPCODE_RAY_ADDRESS") if production else _optional("STEPCODE_RAY_ADDRESS")
    if address:
        cluster = RayAddress(address=address)
    else:
        cpus = _optional("STEPCODE_RAY_CPUS")
        cluster = LocalRay(ray_init_options={
            "include_dashboard": False, "object_store_memory": LOCAL_RAY_OBJECT_STORE_MB * 2**20,
            **({"num_cpus": int(cpus)} if cpus else {}),
        })
    return RayTraceRunner(ray_cluster=cluster, workers=int(_optional("STEPCODE_RAY_WORKERS", "0")))


def mlflow_tracking() -> MlflowTracking:
    """``$STEPCODE_MLFLOW_TRACKING_URI`` and ``$STEPCODE_MLFLOW_EXPERIMENT``; unset: off."""
    return MlflowTracking(tracking_uri=_optional("STEPCODE_MLFLOW_TRACKING_URI"),
                          experiment=_optional("STEPCODE_MLFLOW_EXPERIMENT", "stepcode"))


def local_resources() -> dict:
    return {
        "store": ArtifactStore(root=_optional("STEPCODE_ARTIFACTS")),
        "trace_runner": trace_runner(),
        "sandbox": SandboxResource(backend=_optional("STEPCODE_SANDBOX_BACKEND", "auto")),
        "checkpoint_registry": CheckpointRegistry(external_dir=_optional("STEPCODE_EXTERNAL_CHECKPOINTS")),
        "training_launcher": LocalTrainingLauncher(),
        "mlflow_tracking": mlflow_tracking(),
        "benchmark_files": BenchmarkFiles(reference_data=_optional(REFERENCE_DATA_VARIABLE),
                                          livecodebench=_optional("STEPCODE_LIVECODEBENCH")),
    }


def production_resources() -> dict:
    return {
        "store": ArtifactStore(root=dg.EnvVar("STEPCODE_ARTIFACTS")),
        "sandbox": SandboxResource(backend="docker", docker_image=_optional("STEPCODE_SANDBOX_IMAGE")),
        "trace_runner": trace_runner(production=True),
        "checkpoint_registry": CheckpointRegistry(registry_file=_optional("STEPCODE_CHECKPOINT_REGISTRY"),
                                                  external_dir=dg.EnvVar("STEPCODE_EXTERNAL_CHECKPOINTS")),
        "training_launcher": LocalTrainingLauncher(num_processes=int(_optional("STEPCODE_TRAINING_PROCESSES", "1"))),
        "mlflow_tracking": mlflow_tracking(),
        "benchmark_files": BenchmarkFiles(reference_data=dg.EnvVar(REFERENCE_DATA_VARIABLE),
                                          livecodebench=_optional("STEPCODE_LIVECODEBENCH")),
    }


def resources_for(name: str | None = None) -> dict:
    """The resource set of deployment ``name`` (default: ``$STEPCODE_DEPLOYMENT``, else local)."""
    name = name or _optional(DEPLOYMENT_VARIABLE, "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"${DEPLOYMENT_VARIABLE} must be one of {', '.join(DEPLOYMENTS)}, got {name!r}")
    return local_resources() if name == "local" else production_resources()
