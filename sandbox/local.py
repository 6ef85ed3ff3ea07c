"""Local backend: warm worker processes on this machine, for hosts without Docker.

Started as root on Linux, each worker enters its own pid/mount/net/ipc/uts namespaces once (see
``worker.py``), chroots into a minimal read-only root with private tmpfs scratch space, joins a
memory/pids cgroup where the kernel allows, and runs each program as its own unprivileged uid
(``uid_base + index``, random per pool) so that RLIMIT_NPROC and signals are per worker. Without root
it falls back to session + subreaper + rlimits, and says so: that mode cannot stop a program from
signalling or reading what the invoking user can.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

from sandbox.pool import WorkerHandle
from sandbox.seccomp import filter_for_worker
from sandbox.worker import SECRET_VARIABLE

log = logging.getLogger("sandbox")
WORKER = Path(__file__).with_name("worker.py")
CGROUP_PARENT = "stepcode-sandbox"
# The worker's whole environment (runs get an empty one). Two malloc arenas, not 8 per core at 64 MiB
# of address space each, so that threaded programs fit under RLIMIT_AS.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}


def pick_python(isolate: bool) -> str:
    """The interpreter for workers. Isolated: the distribution's python3.X of our version when there is
    one (statically linked and PGO-built, it forks faster, and it is what the Docker image runs), else
    our base interpreter outside any virtualenv (runs see the bare stdlib either way; the minimal root
    makes its prefix readable to them). Not isolated: ours."""
    if not isolate:
        return sys.executable
    system = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    if os.path.exists(system):
        return system
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base) if os.path.exists(base) else sys.executable


def item_mounts(tmpfs_mb: int) -> list[list]:
    """The scratch mounts every item gets new: [path, MiB, inodes] (few inodes: a small, quick tmpfs)."""
    return [["/tmp", tmpfs_mb, 4096], ["/var/tmp", 16, 1024], ["/dev/shm", 16, 1024]]


def default_site_dirs() -> list[str]:
    """The package folders of the interpreter running StepCode (its virtualenv): what the programs
    the pipeline runs may import besides the standard library (numpy and pandas for LiveCodeBench's
    imports, what REval's programs import), mounted read-only in the sandbox."""
    paths = sysconfig.get_paths()
    folders = []
    for key in ("purelib", "platlib"):
        folder = os.path.realpath(paths[key])
        if os.path.isdir(folder) and folder not in folders:
            folders.append(folder)
    return folders


def _remove_empty_cgroups() -> None:
    """Groups left by workers of processes that died without closing; in-use ones refuse rmdir."""
    for parent in (f"/sys/fs/cgroup/{CGROUP_PARENT}", f"/sys/fs/cgroup/memory/{CGROUP_PARENT}",
                   f"/sys/fs/cgroup/pids/{CGROUP_PARENT}"):
        try:
            entries = list(os.scandir(parent))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(entry.path)
                except OSError:
                    pass


class LocalBackend:
    """Factory for local workers plus the host-side state they share (scratch dir, cgroups)."""

    name = "local"

    def __init__(self, *, isolate: bool | None = None, python: str | None = None, tmpfs_mb: int = 64,
                 nproc: int = 64, uid_base: int | None = None, cgroups: bool = True,
                 site_dirs: list[str] | None = None):
        can_isolate = sys.platform.startswith("linux") and os.geteuid() == 0
        self.isolate = can_isolate if isolate is None else bool(isolate)
        if self.isolate and not can_isolate:
            raise ValueError("isolation needs root on Linux")
        if not self.isolate:
            log.warning("local sandbox without root: no namespaces or uid drop, only rlimits and process groups")
        self.python = python or pick_python(self.isolate)
        # uids of their own per pool, so two pools on one host never share an RLIMIT_NPROC count
        self.uid_base = uid_base if uid_base is not None else 200_000 + secrets.randbelow(1_000_000) * 64
        self.tmpfs_mb, self.nproc = tmpfs_mb, nproc
        self.site_dirs = default_site_dirs() if site_dirs is None else [str(d) for d in site_dirs]
        self.use_cgroups = cgroups and self.isolate
        self.tag = uuid.uuid4().hex[:8]
        if self.use_cgroups:
            _remove_empty_cgroups()
        self.scratch = None if self.isolate else tempfile.mkdtemp(prefix="stepcode-sbx-")

    def make_worker(self, index: int) -> "LocalWorker":
        return LocalWorker(self, index)

    def cgroup_dirs(self, index: int) -> list[str]:
        """Create this worker's memory and pids cgroups where the kernel lets us (best effort)."""
        if not self.use_cgroups:
            return []
        made = []
        name = f"{self.tag}-{index}"
        if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # v2
            parent = f"/sys/fs/cgroup/{CGROUP_PARENT}"
            try:
                os.makedirs(parent, exist_ok=True)
                with open(f"{parent}/cgroup.subtree_control", "w") as fh:
                    fh.write("+memory +pids")
                os.makedirs(f"{parent}/{name}", exist_ok=True)
                made.append(f"{parent}/{name}")
            except OSError:
                pass
        else:
            for ctrl in ("memory", "pids"):
                parent = f"/sys/fs/cgroup/{ctrl}/{CGROUP_PARENT}"
                try:
                    os.makedirs(f"{parent}/{name}", exist_ok=True)
                    made.append(f"{parent}/{name}")
                except OSError:
                    pass
        for d in made:
            for fname in ("pids.max",):
                try:
                    with open(f"{d}/{fname}", "w") as fh:
                        fh.write(str(self.nproc + 16))
                except OSError:
                    pass
        return made

    def close(self) -> None:
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


class LocalWorker(WorkerHandle):
    def __init__(self, backend: LocalBackend, index: int):
        super().__init__()
        self.backend, self.index = backend, index
        self.label = f"local worker {index}"
        self.proc: subprocess.Popen | None = None
        self.cgroups: list[str] = []
        self._log = None

    def _spawn(self) -> None:
        b = self.backend
        self.cgroups = b.cgroup_dirs(self.index)
        cfg = {"isolate": b.isolate, "tmpfs_mb": b.tmpfs_mb, "nproc": b.nproc, "cgroups": self.cgroups,
               "uid": b.uid_base + self.index if b.isolate else None,
               "scratch": "/tmp" if b.isolate else os.path.join(b.scratch, str(self.index)),
               "item_namespaces": b.isolate, "item_mounts": item_mounts(b.tmpfs_mb),
               "seccomp": filter_for_worker(), "site_dirs": b.site_dirs}
        self._log = tempfile.TemporaryFile()
        self.secret = secrets.token_hex(32)
        self.proc = subprocess.Popen([b.python, "-I", str(WORKER), json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log,
                                     env={**WORKER_ENV, SECRET_VARIABLE: self.secret}, cwd="/", close_fds=True,
                                     start_new_session=True)

    def _send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _read_some(self, timeout: float) -> bytes:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        return os.read(fd, 1 << 20)

    def diagnostics(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return "worker stderr: " + self._log.read()[-2000:].decode("utf-8", "replace")

    def _destroy(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                proc.stdin.close()  # EOF: the worker exits on its own
            except OSError:
                pass
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the namespace dies with its init
                except ProcessLookupError:
                    pass
                proc.wait()
            proc.stdout.close()
        for d in self.cgroups:
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.cgroups = []
        if self._log is not None:
            self._log.close()
            self._log = None
