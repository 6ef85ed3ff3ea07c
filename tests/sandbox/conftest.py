"""Fixtures for the sandbox tests: one warm pool per backend for the whole session, a real Docker
daemon (the image is built on first use), and checks that nothing a run started is left running."""

from __future__ import annotations

import os
import time

import pytest

from sandbox import ExecutionRequest, open_sandbox
from sandbox.docker_backend import (
    LABEL,
    docker_client,
    docker_unavailable_reason,
    ensure_image,
)


@pytest.fixture(scope="session")
def docker_image() -> str:
    """The sandbox image tag; builds it when missing (debootstrap base: about a minute, once)."""
    reason = docker_unavailable_reason()
    if reason is not None:
        pytest.skip(f"Docker tests need a daemon: {reason} (scripts/ensure_docker.sh starts one)")
    client = docker_client()
    try:
        return ensure_image(client)
    finally:
        client.close()


@pytest.fixture(scope="session")
def local_pool():
    with open_sandbox("local", workers=2) as sb:
        yield sb


@pytest.fixture(scope="session")
def docker_pool(docker_image):
    with open_sandbox("docker", workers=2, docker_options={"image": docker_image}) as sb:
        yield sb


@pytest.fixture(params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def sb(backend, request):
    """The session pool of ``backend``; after the test, asserts the run left no process behind."""
    pool = request.getfixturevalue(f"{backend}_pool")
    yield pool
    assert_nothing_left(pool)


def sandbox_processes(pool) -> list[str]:
    """Processes of runs still alive: for local, any host process owned by one of the pool's uids;
    for Docker, any process in a pool container besides its worker (PID 1)."""
    if pool.name == "local":
        first = pool.backend.uid_base
        uids = range(first, first + len(pool.workers))
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as fh:
                    status = fh.read()
            except OSError:
                continue
            uid = int(status.split("\nUid:")[1].split()[0])
            if uid in uids:
                found.append(f"pid {entry} uid {uid}")
        return found
    found = []
    for worker in pool.workers:
        top = worker.container.top(ps_args="-eo pid,comm")
        procs = top.get("Processes") or []
        if len(procs) > 1:
            found.append(f"{worker.container.name}: {procs}")
    return found


def assert_nothing_left(pool, wait_s: float = 2.0) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        left = sandbox_processes(pool)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"
    assert pool.run(ExecutionRequest(code="print('alive')")).stdout == "alive\n", "pool no longer works"


@pytest.fixture
def leftovers():
    """``leftovers(pool)``: descriptions of processes runs left behind (empty when none)."""
    return sandbox_processes


def labelled_containers() -> list:
    client = docker_client()
    try:
        return client.containers.list(all=True, filters={"label": LABEL})
    finally:
        client.close()
