"""Backend selection: ``open_sandbox(backend="auto" | "local" | "docker", workers=None)``."""

from __future__ import annotations

import logging
import os

from sandbox.contract import SandboxError
from sandbox.docker_backend import (
    DockerBackend,
    docker_client,
    docker_unavailable_reason,
    remove_stale_containers,
)
from sandbox.local import LocalBackend
from sandbox.pool import Sandbox

log = logging.getLogger("sandbox")
BACKENDS = ("auto", "local", "docker")


def open_sandbox(backend: str = "auto", workers: int | None = None, *, docker_options: dict | None = None,
                 local_options: dict | None = None) -> Sandbox:
    """Start a pool of warm workers; use as a context manager (or call ``close()``).

    ``auto`` picks Docker when a daemon answers and the sandbox image exists or can be built, else
    the local backend, and logs which. ``workers`` defaults to the number of CPUs. The option dicts go
    to ``DockerBackend`` and ``LocalBackend``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    n = (os.cpu_count() or 1) if workers is None else int(workers)
    if n < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if backend in ("docker", "auto"):
        reason = docker_unavailable_reason()
        if reason is None:
            try:
                chosen = DockerBackend(**(docker_options or {}))
                log.info("sandbox: using the docker backend (image %s)", chosen.image)
                return Sandbox(chosen, n)
            except SandboxError as exc:
                reason = str(exc)
        if backend == "docker":
            raise SandboxError(f"docker backend unavailable: {reason}")
        log.warning("sandbox: docker unavailable (%s); using the local backend", reason)
    chosen = LocalBackend(**(local_options or {}))
    log.info("sandbox: using the local backend (%s)", "namespaces + uid drop" if chosen.isolate else "rlimits only")
    return Sandbox(chosen, n)


def remove_orphaned_workers() -> int:
    """Remove the sandbox containers of processes that died without closing their pool (a killed
    training rank); local workers need nothing, they exit when their owner's pipe closes. Returns
    how many were removed."""
    if docker_unavailable_reason() is not None:
        return 0
    client = docker_client(timeout=10)
    try:
        return remove_stale_containers(client)
    finally:
        client.close()
