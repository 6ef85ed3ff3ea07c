"""Resource sets per deployment, chosen by one environment variable, ``$STEPCODE_DEPLOYMENT``.

* ``local`` (the default): everything under ``$STEPCODE_HOME`` in the checkout, the sandbox's backend
  chosen at run time (Docker when a daemon answers, else the local one), training on this machine.
  Every setting is optional; the variables below override the defaults when set.
* ``production``: a shared deployment (``deploy/dagster.yaml``, PostgreSQL). Artifacts and external
  checkpoints live on shared storage named by required variables; untrusted code runs only in
  Docker. Required variables are Dagster ``EnvVar`` s: read when a run starts, shown as such in the UI,
  and a run that lacks one fails naming it.

Environment read here, once, when the code location loads, so no asset body reads it.
"""

from __future__ import annotations

import dagster as dg

from pipelines.checkpoints import CheckpointRegistry
from pipelines.launchers import LocalTrainingLauncher
from pipelines.resources import BenchmarkFiles, SandboxResource
from pipelines.storage import ArtifactStore
from stepcode_core.data.reference import REFERENCE_DATA_VARIABLE

DEPLOYMENT_VARIABLE = "STEPCODE_DEPLOYMENT"
DEPLOYMENTS = ("local", "production")


def _optional(name: str, default: str = "") -> str:
    return dg.EnvVar(name).get_value(default) or default


def local_resources() -> dict:
    return {
        "store": ArtifactStore(root=_optional("STEPCODE_ARTIFACTS")),
        "sandbox": SandboxResource(backend=_optional("STEPCODE_SANDBOX_BACKEND", "auto")),
        "checkpoint_registry": CheckpointRegistry(external_dir=_optional("STEPCODE_EXTERNAL_CHECKPOINTS")),
        "training_launcher": LocalTrainingLauncher(),
        "benchmark_files": BenchmarkFiles(reference_data=_optional(REFERENCE_DATA_VARIABLE),
                                          livecodebench=_optional("STEPCODE_LIVECODEBENCH")),
    }


def production_resources() -> dict:
    return {
        "store": ArtifactStore(root=dg.EnvVar("STEPCODE_ARTIFACTS")),
        "sandbox": SandboxResource(backend="docker", docker_image=_optional("STEPCODE_SANDBOX_IMAGE")),
        "checkpoint_registry": CheckpointRegistry(registry_file=_optional("STEPCODE_CHECKPOINT_REGISTRY"),
                                                  external_dir=dg.EnvVar("STEPCODE_EXTERNAL_CHECKPOINTS")),
        "training_launcher": LocalTrainingLauncher(num_processes=int(_optional("STEPCODE_TRAINING_PROCESSES", "1"))),
        "benchmark_files": BenchmarkFiles(reference_data=dg.EnvVar(REFERENCE_DATA_VARIABLE),
                                          livecodebench=_optional("STEPCODE_LIVECODEBENCH")),
    }


def resources_for(name: str | None = None) -> dict:
    """The resource set of deployment ``name`` (default: ``$STEPCODE_DEPLOYMENT``, else local)."""
    name = name or _optional(DEPLOYMENT_VARIABLE, "local")
    if name not in DEPLOYMENTS:
        raise ValueError(f"${DEPLOYMENT_VARIABLE} must be one of {', '.join(DEPLOYMENTS)}, got {name!r}")
    return local_resources() if name == "local" else production_resources()
