"""Backend specifics: the Docker pool's lock-down, replacement and clean shutdown; the local
backend's namespaces and uid drop; auto-selection."""

from __future__ import annotations

import logging
import os

import pytest

from sandbox import ExecutionRequest, SandboxError, open_sandbox
from sandbox.docker_backend import (
    LABEL,
    SUPERVISOR_CAPS,
    DockerBackend,
    docker_client,
    remove_stale_containers,
)

R = ExecutionRequest


@pytest.mark.docker
def test_containers_are_locked_down(docker_pool):
    for worker in docker_pool.workers:
        worker.container.reload()
        attrs = worker.container.attrs
        host = attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"] and sorted(host["CapAdd"]) == sorted(SUPERVISOR_CAPS)
        assert "no-new-privileges" in host["SecurityOpt"]
        assert host["NetworkMode"] == "none" and attrs["Config"]["NetworkDisabled"] is True
        assert host["Memory"] > 0 and host["MemorySwap"] == host["Memory"]
        assert 0 < host["PidsLimit"] <= 1024
        assert "/tmp" in host["Tmpfs"] and "noexec" in host["Tmpfs"]["/tmp"]
        assert attrs["Config"]["User"] == "0:0"  # the supervisor; items drop to their own uid
        assert host["LogConfig"]["Type"] == "none"
        assert attrs["Config"]["Labels"][LABEL] == "1"
        assert worker.info["pid1"] is True
        mounts = [m for m in attrs["Mounts"] if m["Destination"] == "/ipc"]
        assert all(m["RW"] is False for m in mounts)  # the host channel's directory, read-only


@pytest.mark.docker
def test_the_host_channel_is_unreachable_for_programs(docker_pool):
    assert all(w.chan is not None for w in docker_pool.workers), "a local daemon: direct unix-socket channel"
    code = ("import os\nfor d in ('/ipc', '/proc/1/fd'):\n    try:\n        print(d, os.listdir(d))\n"
            "    except OSError as exc:\n        print(d, type(exc).__name__)\n")
    res = docker_pool.run(R(code=code))
    # The channel's folder was the worker's own (root's, 0700), emptied once it connected and then
    # unmounted; the worker's descriptors are not the item's to list.
    assert res.stdout == "/ipc []\n/proc/1/fd PermissionError\n", res


@pytest.mark.docker
def test_program_sees_no_network_no_caps_and_a_read_only_root(docker_pool):
    code = ("import os, socket\nprint(os.getuid(), os.geteuid())\n"
            "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
            "print(sorted(n for _, n in socket.if_nameindex()))\n"
            "try:\n    open('/etc/x', 'w')\nexcept OSError as e:\n    print('ro', e.errno)\n")
    res = docker_pool.run(R(code=code))
    uids = {f"{uid} {uid}" for uid in range(docker_pool.backend.uid_base, docker_pool.backend.uid_base + 2)}
    lines = res.stdout.splitlines()
    assert lines[0] in uids and lines[1:] == ["0000000000000000", "['lo']", "ro 30"]


@pytest.mark.docker
def test_a_dead_container_is_replaced(docker_image):
    with open_sandbox("docker", workers=1, docker_options={"image": docker_image}) as sb:
        worker = sb.workers[0]
        old = worker.container.id
        worker.container.kill()
        res = sb.run(R(code="print(1)"))  # the run whose worker was dead costs a re-run, nothing else
        assert res.status == "ok" and res.stdout == "1\n"
        assert worker.replacements == 1 and worker.container.id != old
        assert sb.run(R(code="print(2)")).stdout == "2\n"
        client = docker_client()
        assert not client.containers.list(all=True, filters={"id": old})
        client.close()


@pytest.mark.docker
def test_container_killed_by_oom_is_reported_as_memory(docker_image):
    # Fill the container's memory through its tmpfs (not the run's address space): the cgroup OOM
    # killer or ENOSPC stops it; either way the pool keeps working.
    with open_sandbox("docker", workers=1, docker_options={"image": docker_image, "memory_mb": 128,
                                                          "tmpfs_mb": 512}) as sb:
        code = "i = 0\nwhile True:\n    open(f'/tmp/fill{i}', 'wb').write(b'1' * (8 << 20))\n    i += 1"
        res = sb.run(R(code=code, memory_mb=128, timeout_s=20))
        assert res.status == "memory", res
        assert sb.run(R(code="print('ok')", memory_mb=128)).stdout == "ok\n"


@pytest.mark.docker
def test_close_leaves_no_container(docker_image):
    client = docker_client()
    try:
        sb = open_sandbox("docker", workers=2, docker_options={"image": docker_image})
        session = sb.backend.session
        mine = {"label": f"{LABEL}.session={session}"}
        assert len(client.containers.list(filters=mine)) == 2
        sb.run_batch([R(code="print(1)")] * 4)
        sb.close()
        assert client.containers.list(all=True, filters=mine) == []
    finally:
        client.close()


@pytest.mark.docker
def test_containers_of_dead_processes_are_removed(docker_image):
    client = docker_client()
    try:
        backend = DockerBackend(image=docker_image, client=client)
        labels = {**backend.labels(), f"{LABEL}.pid": "999999999"}
        stale = client.containers.create(docker_image, labels=labels, network_mode="none")
        assert remove_stale_containers(client) >= 1
        assert not client.containers.list(all=True, filters={"id": stale.id})
    finally:
        client.close()


@pytest.mark.docker
def test_request_over_the_pool_memory_is_a_clear_error(docker_pool):
    with pytest.raises(ValueError, match="memory_mb"):
        docker_pool.run(R(code="print(1)", memory_mb=4096))


def test_local_workers_are_isolated(local_pool):
    if os.geteuid() != 0:
        pytest.skip("namespaces and uid drop need root")
    info = local_pool.workers[0].info
    assert info["isolated"] and info["pid1"]
    code = ("import os, socket\nprint(os.getuid(), os.getgid(), os.getgroups())\n"
            "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
            "print(socket.gethostname())\n"
            "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n")
    out = local_pool.run(R(code=code)).stdout.splitlines()
    uid = int(out[0].split()[0])
    first = local_pool.backend.uid_base
    assert first <= uid < first + len(local_pool.workers) and out[0].endswith(" []")
    assert out[1] == "['1', '2']" or len(eval(out[1])) <= 3, "only the worker and this run are visible"
    assert out[2] == "sandbox"
    assert out[3] == "0000000000000000"


def test_each_local_worker_has_its_own_uid(local_pool):
    uids = {local_pool.run(R(code="import os; print(os.getuid())")).stdout for _ in range(8)}
    seen = set()
    for _ in range(20):
        seen |= {r.stdout for r in local_pool.run_batch([R(code="import os, time; time.sleep(0.05); print(os.getuid())")] * 2)}
    assert len(seen | uids) == len(local_pool.workers)


def test_local_without_isolation_still_contains_runs():
    """The fallback for non-root hosts: process groups, subreaper and rlimits."""
    with open_sandbox("local", workers=1, local_options={"isolate": False}) as sb:
        assert sb.workers[0].info["isolated"] is False
        res = sb.run(R(code="import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('x')"))
        assert res.status == "ok" and res.stdout == "x\n" and res.duration_s < 2
        assert sb.run(R(code="while True: pass", timeout_s=0.5)).status == "timeout"
        assert sb.run(R(code="import os; print(dict(os.environ))")).stdout == "{}\n"
        # Its work folder is removed after each item (or the worker replaced): the next finds it new.
        litter = R(code="import os\nos.makedirs('a/b')\nopen('a/b/left', 'w').close()\nos.chmod('a', 0)")
        look = R(code="import os; print(sorted(os.listdir('.')))")
        assert [r.stdout for r in sb.run_batch([litter, look, litter, look])][1::2] == ["['program.py']\n"] * 2


def test_auto_picks_docker_when_a_daemon_answers_else_local(caplog):
    from sandbox.docker_backend import docker_unavailable_reason

    with caplog.at_level(logging.INFO, logger="sandbox"):
        with open_sandbox("auto", workers=1) as sb:
            assert sb.run(R(code="print(1)")).stdout == "1\n"
            name = sb.name
    expected = "docker" if docker_unavailable_reason() is None else "local"
    assert name == expected
    assert f"using the {expected} backend" in caplog.text


def test_docker_backend_says_why_it_is_unavailable(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(SandboxError, match="docker backend unavailable"):
        open_sandbox("docker", workers=1)
    with open_sandbox("auto", workers=1) as sb:
        assert sb.name == "local"


@pytest.mark.docker
def test_image_is_built_from_the_dockerfile_when_missing(docker_image):
    from sandbox.docker_backend import ensure_image

    client = docker_client()
    tag = f"stepcode-sandbox-test:{os.getpid()}"
    try:
        assert ensure_image(client, tag=tag) == tag
        image = client.images.get(tag)
        assert image.labels.get(LABEL) == "1"
        assert image.attrs["Config"]["User"] == "65000:65000"
        assert ensure_image(client, tag=tag) == tag  # cached: a second call builds nothing
    finally:
        try:
            client.images.remove(tag, force=True)
        finally:
            client.close()


def test_a_dead_local_worker_is_replaced():
    import signal

    with open_sandbox("local", workers=1) as sb:
        worker = sb.workers[0]
        os.killpg(worker.proc.pid, signal.SIGKILL)
        res = sb.run(R(code="print(1)"))  # the run whose worker was dead costs a re-run, nothing else
        assert res.status == "ok" and res.stdout == "1\n"
        assert worker.replacements == 1
        assert sb.run(R(code="print(2)")).stdout == "2\n"


def test_concurrent_callers_share_the_pool(local_pool):
    import threading

    outputs: dict[int, str] = {}

    def call(i: int) -> None:
        outputs[i] = local_pool.run_batch([R(code=f"print({i} * {j})") for j in range(5)])[4].stdout

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outputs == {i: f"{i * 4}\n" for i in range(6)}


def test_a_request_queued_behind_a_lost_worker_runs_on_the_replacement():
    import signal
    import threading

    with open_sandbox("local", workers=1) as sb:
        worker = sb.workers[0]
        killer = threading.Timer(0.5, lambda: os.killpg(worker.proc.pid, signal.SIGKILL))
        killer.start()
        first, second = sb.run_batch([R(code="import time; time.sleep(1.5); print('first')"),
                                      R(code="print('second')")])
        killer.join()
        assert first.status == "ok" and first.stdout == "first\n" and worker.replacements == 1
        assert second.status == "ok" and second.stdout == "second\n"
