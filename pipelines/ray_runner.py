"""``execution_traces`` on a Ray cluster (the ``ray`` extra): :class:`RayTraceRunner`, a
:class:`~pipelines.resources.TraceRunner` whose shards are traced by Ray actors, each holding a warm
sandbox pool (:mod:`stepcode_core.data.ray_shards`).

The cluster is a dagster-ray resource: ``LocalRay`` starts one on this machine for the step and stops
it after; :class:`RayAddress` connects to a running one (a KubeRay cluster's head service);
``dagster_ray.kuberay.KubeRayCluster`` creates one in Kubernetes for the run. Shard artifacts,
cache keys and the published dataset are the same whichever runner traced them.
"""

from __future__ import annotations

import contextlib
import os
from urllib.parse import urlparse

from dagster_ray import RayResource
from pydantic import Field

from pipelines.resources import SandboxResource, TraceRunner
from stepcode_core.data.ray_shards import RayShards


class RayAddress(RayResource):
    """A running Ray cluster, by address: ``ray://<cluster>-head-svc:10001`` (a KubeRay cluster's head
    service, through Ray Client), or ``auto`` on one of the cluster's own nodes.

    Clusters that Ray 2.52+ starts require a token by default; Ray reads it from ``$RAY_AUTH_TOKEN``
    (KubeRay keeps it in a Secret) or ``~/.ray/auth_token``, once told to send one."""

    address: str = Field(description="ray://host:10001, host:6379 or auto")
    token_auth: bool = Field(default=True, description="send the cluster's token ($RAY_AUTH_TOKEN, else "
                             "~/.ray/auth_token): Ray's default for the clusters it starts")

    def connect(self, context):
        if self.token_auth and "RAY_AUTH_MODE" not in os.environ:
            # Ray reads its auth mode once, on import; this is how its own ray.init turns token mode on
            # for a new local cluster (a private helper: the pinned Ray's, checked by the tests).
            from ray._private.authentication.authentication_token_setup import _enable_token_auth

            _enable_token_auth()
        return super().connect(context)

    @property
    def host(self) -> str:
        return urlparse(self.address if "://" in self.address else f"ray://{self.address}").hostname or self.address

    @property
    def name(self) -> str:
        return f"Ray cluster at {self.address}"

    @property
    def ray_address(self) -> str:  # type: ignore[override]
        return self.address

    @property
    def created(self) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return True


class RayTraceRunner(TraceRunner):
    """Shards traced on the Ray cluster of ``ray_cluster``: ``workers`` actors (0: one per
    ``cpus_per_worker`` CPUs of the cluster), each with ``cpus_per_worker`` sandbox workers of the
    run's sandbox configuration; a shard whose worker dies is traced again by a new one, at most
    ``max_attempts`` times."""

    ray_cluster: RayResource
    workers: int = Field(default=0, description="Ray actors tracing shards; 0: one per cpus_per_worker CPUs")
    cpus_per_worker: int = Field(default=1, description="CPUs each actor reserves, and its sandbox workers")
    max_attempts: int = Field(default=3, description="traces of one shard before a dying worker fails the run")

    @contextlib.contextmanager
    def runner(self, context, sandbox: SandboxResource):
        yield RayShards(sandbox.open_options(), workers=self.workers, cpus_per_worker=self.cpus_per_worker,
                        max_attempts=self.max_attempts, log=context.log.info)

    def describe(self) -> dict:
        return {"runner": "ray", "cluster": self.ray_cluster.name}
