"""Where training runs: a resource chosen per deployment (``training_launcher``).

Both launchers start :mod:`pipelines.training_child` through Dagster Pipes with the same extras and
the same command, ``python -m pipelines.training_child`` for one process and ``accelerate launch
--num_processes N [--config_file F] -m pipelines.training_child`` for several:

* :class:`LocalTrainingLauncher` (the default): child processes on the machine of the run;
* :class:`KubernetesTrainingLauncher`: one GPU pod through dagster-k8s' ``PipesK8sClient``, from the
  pod spec in ``configs/k8s_training_pod.yaml``.

Going from the CPU demo to 8 GPUs or a cluster changes the launcher's configuration, nothing else:
the global batch sizes in the training settings do not depend on the number of processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.errors import (  # not exported
    DagsterExecutionInterruptedError,
    DagsterPipesExecutionError,
)
from pydantic import Field

from pipelines import (
    training_child,  # imported for its name, and so that its code is the assets' code
)
from pipelines.processes import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[1]
CHILD_MODULE = training_child.__name__
# Prefix of the child's command: ask for SIGTERM when the thread that started it dies, then exec the
# command (the request survives exec). Not a preexec_fn, which is unsafe in a threaded process.
DIE_WITH_PARENT = [sys.executable, "-c", ("import ctypes, os, signal, sys; "
                   "ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0); os.execvp(sys.argv[1], sys.argv[1:])")]


def training_command(num_processes: int, accelerate_config: str = "", python: str = sys.executable,
                     root: Path | None = REPO_ROOT) -> list[str]:
    """The child's command line: plain python for one process without a config, else accelerate. A
    relative config path is taken from ``root`` (None: left relative, for a container's working dir)."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}")
    if num_processes == 1 and not accelerate_config:
        return [python, "-m", CHILD_MODULE]
    command = [python, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), "--num_machines", "1"]
    if accelerate_config:
        command += ["--config_file", accelerate_config if root is None else str(_resolve(accelerate_config, root))]
    else:  # DDP: torchrun starts the ranks (on a machine without CUDA they use gloo)
        command += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*command, "-m", CHILD_MODULE]


def _resolve(path: str, root: Path = REPO_ROOT) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


class TrainingLauncher(dg.ConfigurableResource):
    """Starts the training child for a checkpoint asset and returns the Pipes invocation."""

    num_processes: int = Field(default=1, description="training processes (one per GPU); 1: plain python")
    accelerate_config: str = Field(default="", description="accelerate config file (FSDP, ZeRO-3), relative "
                                   "to the checkout or absolute; empty: DDP when num_processes > 1")

    def command(self, python: str = sys.executable, root: Path | None = REPO_ROOT) -> list[str]:
        return training_command(self.num_processes, self.accelerate_config, python, root)

    def launch(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation:
        raise NotImplementedError


class ProcessGroupPipesClient(dg.PipesSubprocessClient):
    """``PipesSubprocessClient`` whose child leads a process group of its own, and on cancellation
    the whole group is stopped: SIGTERM to every process, SIGKILL to whatever is left after the grace
    period. Written by hand because Dagster's client signals only its direct child (and leaves it
    running if it outlives the timeout), while ``accelerate launch`` has one process per rank below
    it. The child also receives SIGTERM if the run's process dies (PR_SET_PDEATHSIG)."""

    def run(self, *, context, extras=None, command, env=None, cwd=None) -> dg.PipesClientCompletedInvocation:
        with dg.open_pipes_session(context=context, context_injector=self.context_injector,
                                message_reader=self.message_reader, extras=extras) as session:
            process = subprocess.Popen(
                [*DIE_WITH_PARENT, *command], cwd=cwd or self.cwd, start_new_session=True,
                env={**os.environ, **self.env, **(env or {}), **session.get_bootstrap_env_vars()},
            )
            try:
                process.wait()
            except (DagsterExecutionInterruptedError, KeyboardInterrupt):
                context.log.info(f"[pipes] run interrupted: stopping the training processes (group {process.pid})")
                raise
            finally:
                # After an interrupt, and after a normal or failed exit: nothing of the group may outlive
                # its leader.
                stop_process_group(process, self.termination_timeout_seconds)
            if process.returncode != 0:
                raise DagsterPipesExecutionError(f"training processes failed with code {process.returncode}")
        return dg.PipesClientCompletedInvocation(session)


class LocalTrainingLauncher(TrainingLauncher):
    """Training processes on the run's machine (CPU or its GPUs)."""

    termination_grace_s: float = Field(default=30.0, description="after a cancel, seconds before SIGKILL")
    threads_per_process: int = Field(default=0, description="torch threads per rank; 0: the CPUs shared out")

    def launch(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation:
        threads = self.threads_per_process or max(1, (os.cpu_count() or 1) // self.num_processes)
        client = ProcessGroupPipesClient(termination_timeout_seconds=self.termination_grace_s)
        context.log.info(f"launching {' '.join(self.command())}")
        return client.run(context=context, extras=extras, command=self.command(), cwd=str(REPO_ROOT),
                          env={"OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO_ROOT)})


class KubernetesTrainingLauncher(TrainingLauncher):
    """One GPU pod per training run through ``PipesK8sClient`` (dagster-k8s). The image holds this
    checkout (the pod spec's ``workingDir``) and its environment; the pod must see the artifact
    folder at the same path as the run (a shared volume, as in the example spec), since the child
    reads the dataset and writes the checkpoint, and a failing rank its traceback, there."""

    num_processes: int = 8
    # FSDP2 by default: the paper's 7B policy with its optimizer, reference model and colocated vLLM
    # does not fit one GPU whole. The path is the image's, relative to the pod's workingDir.
    accelerate_config: str = "configs/accelerate_fsdp.yaml"
    image: str = Field(default="", description="the project image (deploy/Dockerfile), as pushed to a registry "
                       "the cluster pulls from: `scripts/project_image.sh cuda` builds it locally as stepcode:cuda")
    namespace: str = "default"
    pod_spec: str = Field(default="configs/k8s_training_pod.yaml", description="base pod spec (YAML)")
    python: str = Field(default="python", description="the interpreter inside the image")
    load_incluster_config: bool = Field(default=False, description="True when Dagster itself runs in the cluster")
    kubeconfig_file: str | None = None

    def base_pod_spec(self) -> dict:
        """The pod spec file with the image and the training command set on its first container:
        dagster-k8s sets them itself only on a pod of one container, and this pod also runs a Docker
        daemon for the sandbox (an init container)."""
        spec = yaml.safe_load(_resolve(self.pod_spec).read_text())
        if not isinstance(spec, dict) or not spec.get("containers"):
            raise ValueError(f"{self.pod_spec}: a pod spec needs a `containers` list")
        trainer = spec["containers"][0]
        trainer["command"] = self.command(self.python, root=None)
        if self.image:
            trainer["image"] = self.image
        return spec

    def pod_body(self, pod_name: str = "stepcode-training", env: dict | None = None):
        """The pod as PipesK8sClient will create it (a ``kubernetes.client.V1Pod``), for checking."""
        from dagster_k8s.pipes import build_pod_body

        return build_pod_body(pod_name=pod_name, image=None, command=None, env_vars=env or {},
                              base_pod_meta={"labels": {"app": "stepcode-training"}},
                              base_pod_spec=self.base_pod_spec())

    def launch(self, context: dg.AssetExecutionContext, extras: dict) -> dg.PipesClientCompletedInvocation:
        from dagster_k8s import PipesK8sClient

        if not self.image:
            raise dg.Failure("KubernetesTrainingLauncher needs an image: build it with `scripts/project_image.sh cuda` "
                             "(tagged stepcode:cuda), push it to a registry the cluster pulls from, set `image`")
        client = PipesK8sClient(load_incluster_config=self.load_incluster_config, kubeconfig_file=self.kubeconfig_file)
        spec = self.base_pod_spec()
        # Wait for the trainer alone: the sandbox's daemon (a sidecar) is stopped by the kubelet after it,
        # with a non-zero status of its own.
        sidecars = {c["name"] for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"}
        return client.run(context=context, extras=extras, namespace=self.namespace, ignore_containers=sidecars,
                          base_pod_meta={"labels": {"app": "stepcode-training"}}, base_pod_spec=spec)


def failure_from(exc: Exception, errors_dir: Path) -> dg.Failure:
    """A dg.Failure whose description holds each failed rank's last traceback lines."""
    tails = [f"{path.stem}:\n{path.read_text()}" for path in sorted(errors_dir.glob("rank*.txt"))]
    detail = "\n".join(tails) if tails else "(no rank left a traceback; see the step's stderr)"
    return dg.Failure(description=f"{exc}\n{detail}", metadata={"errors": dg.MetadataValue.md(f"```\n{detail}\n```")})
