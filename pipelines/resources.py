"""Dagster resources: ``SandboxResource`` gives assets a pool of sandboxed workers; ``TraceRunner`` says
where ``execution_traces`` traces its shards (this machine; :mod:`pipelines.ray_runner` has the Ray
cluster's); ``BenchmarkFiles`` says where the benchmark files lie (the deployment's reference data,
LiveCodeBench's rows); ``MlflowTracking`` names the MLflow server training runs log to (off by default).

The resource holds configuration; ``open()`` hands out the run's pool, started on first use and
closed when the run's resources are torn down, so a run whose work is all cached starts no worker
and no container, and the steps of one run process share warm workers instead of starting their own.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from sandbox import ExecutionRequest, Sandbox, open_sandbox
from stepcode_core.data.shards import LocalShards
from stepcode_core.data.reference import SKIPPED_REASON, missing_benchmarks, reference_data_dir


class SandboxResource(dg.ConfigurableResource):
    """Where and how untrusted programs run: backend, pool size and the per-run limits."""

    backend: str = Field(default="auto", description="auto (Docker when a daemon answers, else local), local or docker")
    workers: int = Field(default=0, description="warm workers in the pool; 0 means one per CPU")
    timeout_s: float = Field(default=5.0, description="default wall-time limit of a run, seconds")
    memory_mb: int = Field(default=512, description="default memory limit of a run, MiB")
    output_limit_bytes: int = Field(default=1024 * 1024, description="default cap on each of stdout and stderr")
    docker_image: str = Field(default="", description="sandbox image; empty: built from sandbox/Dockerfile")
    docker_memory_mb: int = Field(default=2048, description="largest per-run memory a Docker worker accepts (the CRUXEval scorer asks 2048)")
    pids_limit: int = Field(default=128, description="processes and threads per Docker container")
    tmpfs_mb: int = Field(default=64, description="size of each worker's writable scratch space, MiB")

    _pool: Sandbox | None = PrivateAttr(default=None)
    _in_run: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._in_run = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def open(self) -> contextlib.AbstractContextManager[Sandbox]:
        """``with resource.open() as sb: ...``: in a run, the run's pool (kept open for the next
        step); outside one, a pool of its own, closed at the end of the block."""
        if not self._in_run:
            return self._start()
        if self._pool is None or self._pool.closed:
            self._pool = self._start()
        return contextlib.nullcontext(self._pool)

    def open_options(self) -> dict:
        """``open_sandbox`` keywords for this configuration (a training child opens its own pool)."""
        docker_options = {"memory_mb": self.docker_memory_mb, "pids_limit": self.pids_limit, "tmpfs_mb": self.tmpfs_mb}
        if self.docker_image:
            docker_options["image"] = self.docker_image
        return {"backend": self.backend, "workers": self.workers or None, "docker_options": docker_options,
                "local_options": {"tmpfs_mb": self.tmpfs_mb}}

    def _start(self) -> Sandbox:
        return open_sandbox(**self.open_options())

    def request(self, code: str, stdin: str = "", **limits) -> ExecutionRequest:
        """An ExecutionRequest with this resource's default limits (``limits`` override them)."""
        defaults = {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb,
                    "output_limit_bytes": self.output_limit_bytes}
        return ExecutionRequest(code=code, stdin=stdin, **{**defaults, **limits})


class TraceRunner(dg.ConfigurableResource):
    """Where ``execution_traces`` traces its shards. This one, every deployment's default: on the machine
    that runs the step, through the run's sandbox pool, ``in_flight`` shards at once (while one
    shard's traces are parsed, the other's programs keep the pool busy).
    :class:`pipelines.ray_runner.RayTraceRunner` traces them on a Ray cluster instead."""

    in_flight: int = Field(default=2, description="shards traced at once over this machine's sandbox pool "
                           "(this runner's setting; a Ray runner traces one shard per worker)")

    @contextlib.contextmanager
    def runner(self, context, sandbox: SandboxResource):
        """A runner (``.name``, ``.run(tasks, on_done)``) for one materialization."""
        with sandbox.open() as pool:
            yield LocalShards(pool, self.in_flight)

    def describe(self) -> dict:
        return {"runner": "local"}


class BenchmarkFiles(dg.ConfigurableResource):
    """Where the benchmark files lie: the reference data a deployment provides (CRUXEval, REval) and
    LiveCodeBench's rows, which are not bundled. The deployment's resource set fills them from the
    environment (:mod:`pipelines.deployments`); an asset's config can override LiveCodeBench's."""

    reference_data: str = Field(default="", description="folder holding cruxeval/ and reval/ (`stepcode data "
                                "fetch` fills it); empty: the user's cache, $STEPCODE_REFERENCE_DATA, else "
                                "$STEPCODE_HOME/reference-data, else ~/.cache/stepcode/reference-data")
    livecodebench: str = Field(default="", description="LiveCodeBench execution rows (JSONL or Parquet); "
                               "empty: eval_livecodebench is skipped with a reason")

    def reference_dir(self) -> Path:
        """The reference-data folder; it may lack files (see :meth:`missing`)."""
        return Path(self.reference_data).expanduser().resolve() if self.reference_data else reference_data_dir()

    def missing(self) -> list[str]:
        """The benchmarks (cruxeval, reval) whose reference files are not all there."""
        return missing_benchmarks(self.reference_dir())

    def skipped_reason(self, benchmark: str) -> str | None:
        """Why an evaluation of ``benchmark`` is skipped (its reference data is missing), else None."""
        return SKIPPED_REASON if benchmark in self.missing() else None

    def cruxeval(self) -> Path:
        return self.reference_dir() / "cruxeval" / "cruxeval.jsonl"

    def reval(self) -> Path:
        return self.reference_dir() / "reval"

    def livecodebench_file(self, override: str = "") -> Path | None:
        """``override`` (an asset's own config), else the deployment's file; None when neither is set."""
        configured = override or self.livecodebench
        return Path(configured).expanduser() if configured else None


class MlflowTracking(dg.ConfigurableResource):
    """The MLflow tracking server (or a ``sqlite:///`` / ``file:`` store) each training run logs to:
    its curves' numbers per step, the held-out numbers, its settings as params, tagged with the
    checkpoint's asset and artifact (cache) key. Off by default: an empty URI logs nothing and
    mlflow (an optional extra) is never imported. The training child does the logging
    (:class:`stepcode_core.training.tracking.Tracking`); a reused checkpoint logs no new run."""

    tracking_uri: str = Field(default="", description="MLflow tracking URI (http://..., sqlite:///..., file:...); "
                              "empty: no MLflow logging")
    experiment: str = Field(default="stepcode", description="MLflow experiment the runs go to (created if missing)")

    def child_options(self, tags: dict, run_name: str = "") -> dict | None:
        """The training child's ``mlflow`` extra; None when off."""
        if not self.tracking_uri:
            return None
        return {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "tags": tags,
                "run_name": run_name or None}
