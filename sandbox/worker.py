"""The in-sandbox worker: a warm Python interpreter that runs batches of items, one process each.

Both backends run this file: the local backend as a root-started process that first moves itself
into fresh pid/mount/net/ipc/uts namespaces, the Docker backend as PID 1 of a locked-down container.
Forking from an interpreter that is already started and has common modules imported is what makes
an item cost about a millisecond of CPU instead of a Python start-up (tens of milliseconds).

Protocol (host -> worker -> host): frames of a 4-byte big-endian length plus a JSON object. The
worker first sends ``{"ready": true, ...}``; then for each ``{"batch": {"prelude", "hash_seed",
"items": [{code, stdin, timeout_s, memory_mb, output_limit_bytes}, ...]}}`` it sends one result frame
``{status, exit_code, stdout, stderr, duration_s}`` per item, in order. EOF ends it.

Isolation between items: the worker is the *supervisor*. For each sandbox run it compiles the
prelude and the items before any fork (up to 64 KiB a source under an address-space limit, larger
ones in a confined child: see ``Worker.compile_chunk``); then each item is a child forked from the
supervisor that, as
root still, enters new mount and IPC namespaces, mounts fresh tmpfs on its scratch folders, drops to
the items' uid under rlimits and the seccomp filter, and only then runs the prelude and the item.
Whatever an item made in its scratch folders or its IPC namespace ends with it: nothing is wiped,
so nothing can fail to be. When the item ends, the supervisor kills every other process of the
sandbox (``kill(-1)`` from the pid namespace's init, so double-forked ``setsid`` daemons die too)
and reaps them. Any failure of the supervisor's own work (an item it could not confine) stops the
worker: the host replaces it and runs the item again. Init of a pid namespace cannot be signalled
by its children and the items' uid cannot trace or open it, so an item cannot stop the supervisor
or forge another item's verdict. A batch whose ``hash_seed`` differs from the interpreter's
re-executes the worker in place (same pid, same namespaces) under ``PYTHONHASHSEED`` first.

Stdlib only: it is copied into the image.
"""

from __future__ import annotations

import _signal
import atexit

# Imported once here so that runs that use them do not pay for the import (the fork shares them).
# Not threading: its at-fork hooks would add half a millisecond to every run.
import bisect  # noqa: F401,E402
import builtins
import collections  # noqa: F401,E402
import copy  # noqa: F401,E402
import functools  # noqa: F401,E402
import gc
import heapq  # noqa: F401,E402
import io
import itertools  # noqa: F401,E402
import json
import math  # noqa: F401,E402
import operator  # noqa: F401,E402
import os
import re  # noqa: F401,E402
import resource
import select
import signal
import string  # noqa: F401,E402
import struct
import sys
import time
import traceback  # noqa: F401,E402
import types

_HEADER = struct.Struct(">I")
ITEM_HOOK = "__run_item__"  # a prelude that defines it runs each item's code object itself
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")  # for preloaded libraries
MAX_FRAME = 256 * 1024 * 1024

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
MS_REC, MS_PRIVATE, MS_MOVE, MNT_DETACH = 0x4000, 1 << 18, 8192, 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS, SECCOMP_MODE_FILTER = 22, 38, 2
MAX_CODE_CHARS = 1 << 20  # an item's program; longer ones are an error of their own, never compiled
INLINE_COMPILE_CHARS = 64 * 1024  # sources up to this compile in the supervisor, larger in a confined child
PRELUDE_MEMORY_MB, PRELUDE_TIMEOUT_S = 1024, 30.0  # limits of the child that compiles a prelude
PRELUDE_FILE = "/tmp/prelude.py"
SECRET_VARIABLE = "STEPCODE_WORKER_SECRET"  # what the worker proves it holds in its ready frame
PROOF_MESSAGE = b"stepcode-sandbox-worker-ready"


class WorkerBroken(Exception):
    """Isolation or clean-up failed: the worker stops, the host replaces it and re-runs the item."""

# ---------------------------------------------------------------- framing (also used by the host)

def encode_frame(obj: dict) -> bytes:
    data = json.dumps(obj, ensure_ascii=True).encode("ascii")
    return _HEADER.pack(len(data)) + data


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> dict | None:
    header = _read_exact(fd, 4)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError("frame too large")
    body = _read_exact(fd, size)
    return None if body is None else json.loads(body)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ---------------------------------------------------------------- kernel helpers

_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        import ctypes

        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(rc: int) -> None:
    if rc != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _prctl(option: int, value: int) -> None:
    try:
        _libc().prctl(option, value, 0, 0, 0)
    except OSError:
        pass


class Config:
    """What the host asked for on the command line (JSON in argv[1])."""

    def __init__(self, raw: dict):
        self.isolate = bool(raw.get("isolate"))  # local backend, root: namespaces + uid drop
        self.uid = raw.get("uid")  # unprivileged uid for runs (isolate mode)
        self.tmpfs_mb = int(raw.get("tmpfs_mb", 64))
        self.nproc = int(raw.get("nproc", 64))
        self.cgroups = list(raw.get("cgroups", []))  # dirs this worker may set limits in
        self.fsize_mb = int(raw.get("fsize_mb", 16))  # largest file a run may write
        self.undumpable = False  # set when runs share our uid (Docker): see Worker
        self.scratch = raw.get("scratch", "/tmp")
        # Per-item namespaces (root only): each item gets new mount and IPC namespaces with these fresh
        # tmpfs mounts [path, MiB, inodes]; ``unmount`` are mounts of the worker's that items must not
        # have (Docker's /dev/mqueue, /sys) or that would only make each item's namespace costlier;
        # ``rebind`` are folders of the worker's (an interpreter under /tmp) bound again inside the
        # item's fresh /tmp.
        self.item_namespaces = bool(raw.get("item_namespaces"))
        self.item_mounts = [(str(p), int(mb), int(n)) for p, mb, n in raw.get("item_mounts", [])]
        self.unmount = list(raw.get("unmount", []))
        self.rebind = list(raw.get("rebind", []))
        self.seccomp = raw.get("seccomp") or ""  # base64 of the BPF filter every item loads
        # Package folders (read-only) the items may import from, after the standard library.
        self.site_dirs = [d for d in raw.get("site_dirs", []) if isinstance(d, str) and d.startswith("/")]


def _enter_namespaces(cfg: Config) -> None:
    """Move into new namespaces and a minimal read-only root; the caller stays outside and reaps us.

    Called once per worker. After ``unshare(CLONE_NEWPID)`` only the next child lives in the new pid
    namespace, so we fork and the child (PID 1 there) becomes the worker proper.
    """
    libc = _libc()
    _check(libc.unshare(CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS))
    pid = os.fork()
    if pid:  # outside: wait for the namespace init, then exit with its status
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for fd in (0, 1):
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
    _enter_minimal_root(libc, cfg)
    try:
        libc.sethostname(b"sandbox", 7)
    except OSError:
        pass


# Of the host's /etc, only what the loader and Python's stdlib read; the rest (and /home, /opt,
# /run with its sockets, /var, /srv, /root, the project itself) is simply not there.
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "nsswitch.conf", "hosts", "localtime",
        "os-release", "mime.types")
_DEVICES = ("null", "zero", "full", "random", "urandom")
SITE_ROOT = "/site-packages"  # where the package folders the items may import from are mounted (read-only)


def _enter_minimal_root(libc, cfg: Config) -> None:
    """chroot into a tmpfs holding read-only binds of /usr (and the interpreter's prefix), a few
    /etc files and device nodes, our own /proc, and writable tmpfs on /tmp, /var/tmp, /dev/shm."""
    root = "/tmp"  # a mount point that exists everywhere; the host's /tmp stays untouched below it
    prefixes = {"/usr"}
    for prefix in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))):
        if not any(prefix == p or prefix.startswith(p + "/") for p in prefixes):
            prefixes.add(prefix)
    # Opened before the new root covers /tmp: an interpreter there (a checkout's .venv under /tmp) would
    # otherwise vanish from sight; binding from /proc/self/fd reaches it still.
    prefix_fds = {prefix: os.open(prefix, os.O_PATH | os.O_DIRECTORY) for prefix in prefixes}
    site_fds = [os.open(d, os.O_PATH | os.O_DIRECTORY) for d in cfg.site_dirs if os.path.isdir(d)]
    _check(libc.mount(b"tmpfs", root.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"size=4m,mode=0755"))

    def bind(src: str, read_only: bool = True, source: str | None = None) -> None:
        dst = (root + src).encode()
        _check(libc.mount((source or src).encode(), dst, None, MS_BIND | MS_REC, None))
        if read_only:
            libc.mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None)

    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = "/" + top
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/{top}")
        elif os.path.isdir(host):
            os.makedirs(root + host)
            bind(host)
    scratch = ("/tmp", "/var/tmp", "/dev/shm")
    under_scratch = {p for p in prefixes if any(p == d or p.startswith(d + "/") for d in scratch)}
    for prefix in sorted(prefixes - under_scratch):
        os.makedirs(root + prefix, exist_ok=True)
        bind(prefix, source=f"/proc/self/fd/{prefix_fds.pop(prefix)}")
    # Package folders at fixed paths of their own, wherever the host keeps them: never inside a scratch dir
    cfg.site_dirs = []
    for index, fd in enumerate(site_fds):
        inside = f"{SITE_ROOT}/{index}"
        os.makedirs(root + inside)
        bind(inside, source=f"/proc/self/fd/{fd}")
        os.close(fd)
        cfg.site_dirs.append(inside)
    # Copies, not binds: every mount here is copied into each item's mount namespace and torn down
    # with it, so the fewer the cheaper an item (these files are small and read-only to items).
    os.makedirs(root + "/etc")
    for name in _ETC:
        host = "/etc/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/etc/{name}")
        elif os.path.isdir(host):
            os.makedirs(root + host)
            for entry in os.scandir(host):
                if entry.is_file():
                    _copy_file(entry.path, root + entry.path)
        elif os.path.isfile(host):
            _copy_file(host, root + host)
    os.makedirs(root + "/dev")
    for name in _DEVICES:
        open(f"{root}/dev/{name}", "w").close()
        bind("/dev/" + name, read_only=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for d in ("/proc", "/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue", "/run"):
        os.makedirs(root + d)
    _check(libc.mount(b"proc", (root + "/proc").encode(), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None))
    # No scratch mounts of the worker's: every item mounts fresh ones over these folders. An
    # interpreter that lives under a scratch dir keeps its path, bound again in each item's.
    for prefix in sorted(under_scratch):
        os.makedirs(root + prefix, exist_ok=True)
        bind(prefix, source=f"/proc/self/fd/{prefix_fds.pop(prefix)}")
    cfg.rebind = sorted(under_scratch)  # and again inside every item's fresh scratch mounts
    _check(libc.mount(None, root.encode(), None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None))
    os.chdir(root)
    _check(libc.mount(b".", b"/", None, MS_MOVE, None))
    os.chroot(".")
    os.chdir("/")


def _copy_file(source: str, target: str) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    os.chmod(target, 0o644)


# ---------------------------------------------------------------- cgroup limits (local, optional)

class CgroupFiles:
    """The cgroup files a worker needs, opened before it enters its minimal root (no /sys there)."""

    def __init__(self, dirs: list[str], wire: dict | None = None):
        self.limits: list[tuple[str, int]] = []  # (file name, fd); fds survive the re-exec
        self.oom: list[int] = []
        if wire is not None:
            self.limits = [(name, fd) for name, fd in wire["limits"]]
            self.oom = list(wire["oom"])
            return
        names = ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes", "memory.max", "memory.swap.max")
        for d in dirs:
            for name in names:
                self._open(os.path.join(d, name), os.O_WRONLY, name)
        candidates = [os.path.join(d, n) for d in dirs for n in ("memory.events", "memory.oom_control")]
        candidates += ["/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"]
        for path in candidates:  # the container's own group in Docker
            if self._open(path, os.O_RDONLY, None):
                break

    def _open(self, path: str, mode: int, name) -> bool:
        try:
            fd = os.open(path, mode)
        except OSError:
            return False
        if name is None:
            self.oom.append(fd)
        else:
            self.limits.append((name, fd))
        return True

    def to_wire(self) -> dict:
        return {"limits": self.limits, "oom": self.oom}

    def set_memory(self, memory_mb: int) -> None:
        limit = str((memory_mb + 64) * 1024 * 1024).encode()  # the worker itself lives in the group too
        # v1 wants memsw >= limit at every step: lift memsw, set the limit, then memsw to match.
        for name, value in (("memory.memsw.limit_in_bytes", b"-1"), ("memory.limit_in_bytes", limit),
                            ("memory.memsw.limit_in_bytes", limit), ("memory.max", limit), ("memory.swap.max", b"0")):
            for have, fd in self.limits:
                if have == name:
                    try:
                        os.pwrite(fd, value, 0)
                    except OSError:
                        pass

    def oom_kills(self) -> int:
        for fd in self.oom:
            try:
                for line in os.pread(fd, 4096, 0).decode().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except (OSError, ValueError):
                continue
        return 0


# ---------------------------------------------------------------- one run

class Worker:
    def __init__(self, cfg: Config, preload: list[str] = ()):
        self.cfg = cfg
        sys.path.extend(d for d in cfg.site_dirs if d not in sys.path)
        self.preloaded = _preload(preload)
        self.is_init = os.getpid() == 1
        self.runs = 0
        self.memory_mb = None  # the cgroup limit now set
        self.devnull = os.open(os.devnull, os.O_RDONLY)  # stdin of runs that have none
        self.oom_seen = cfg.cg.oom_kills()
        self.confinement = Confinement(cfg)
        os.makedirs(cfg.scratch, exist_ok=True)
        if not self.is_init:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)
        if cfg.uid is None:
            # Runs share our uid: non-dumpable, they cannot ptrace us or open /proc/1/fd to forge replies.
            _prctl(PR_SET_DUMPABLE, 0)
            cfg.undumpable = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Runs get an empty environment: emptied once here, since clearing it in every child costs
        # half a millisecond of copy-on-write faults. A fresh interpreter gets the original back.
        self.environment = dict(os.environ)
        os.environ.clear()
        _prepare_item_interpreter(os.path.join(cfg.scratch, "run", "program.py"))
        gc.freeze()  # our objects leave the collector's sight, so neither side touches their pages

    def compile_chunk(self, prelude: str, items: list[dict]) -> tuple:
        """Compile a sandbox run's prelude and items before the items' forks (a child that compiled
        for itself would pay milliseconds of copy-on-write faults). A source of up to
        ``INLINE_COMPILE_CHARS`` compiles here, under an address-space limit set before its first
        byte is parsed; a larger one (up to ``MAX_CODE_CHARS``) in a confined child (the items' uid,
        the filter, its item's own memory limit and clock), handed back marshalled. Any exception
        compiling raises is the item's error, never the worker's.

        Returns the prelude (None, a code object, or the text of its error) and, per item, ``(code
        object or the exception compiling raised, None, seconds)`` or ``(None, verdict, seconds)``
        when compiling it ran out of time or memory or crashed (the item's result then)."""
        sources = [(prelude, PRELUDE_MEMORY_MB, PRELUDE_TIMEOUT_S, PRELUDE_FILE)] if prelude else []
        sources += [(item["code"], int(item["memory_mb"]), float(item["timeout_s"]), sys.argv[0]) for item in items]
        done: list = [None] * len(sources)
        small = [i for i, source in enumerate(sources) if len(source[0]) <= INLINE_COMPILE_CHARS]
        if small:
            with _address_space_limit(max(sources[i][1] for i in small)):
                for i in small:
                    started = time.monotonic()
                    done[i] = (_compile(sources[i][0], sources[i][3]), None, time.monotonic() - started)
        large = [i for i in range(len(sources)) if done[i] is None]
        while large:
            results = self._compile_some([sources[i] for i in large])
            for i, result in zip(large, results):
                done[i] = result
            large = large[len(results):]
        gc.freeze()  # the new code objects too: children then never touch their pages
        compiled = [(None, verdict, seconds) if verdict else (code, None, seconds)
                    for code, verdict, seconds in done]
        if not prelude:
            return None, compiled
        code, verdict, _ = compiled.pop(0)
        if verdict is not None:
            return f"sandbox: compiling the prelude failed: {verdict['stderr']}\n", compiled
        return (_error_text(code) if isinstance(code, BaseException) else code), compiled

    def _compile_some(self, sources: list[tuple]) -> list[tuple]:
        """Compile ``sources`` in order in one confined child, until one of them breaks it; at least
        one result."""
        hard_mb = max(mb for _, mb, _, _ in sources)
        if hard_mb != self.memory_mb:
            self.cfg.cg.set_memory(hard_mb)
            self.memory_mb = hard_mb
        data_r, data_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(data_w, 3)
                for fd in (0, 1, 2):
                    os.dup2(self.devnull, fd)
                self.confinement.enter(hard_mb, sum(t for _, _, t, _ in sources), keep_fd=3)
                _compile_stream(sources, hard_mb, 3)
            finally:
                os._exit(0)
        os.close(data_w)
        results: list[tuple] = []
        buf = bytearray()
        started = time.monotonic()
        poller = select.poll()
        poller.register(data_r, select.POLLIN)
        verdict = None
        try:
            while len(results) < len(sources):
                if len(buf) >= 4:
                    (size,) = _HEADER.unpack_from(buf)
                    if len(buf) >= 4 + size:
                        now = time.monotonic()
                        results.append((_decode_compiled(bytes(buf[4:4 + size])), None, now - started))
                        del buf[:4 + size]
                        started = now
                        continue
                remaining = started + sources[len(results)][2] - time.monotonic()
                if remaining <= 0:
                    verdict = "timeout"
                    break
                if poller.poll(max(1, int(remaining * 1000))):
                    chunk = os.read(data_r, 1 << 20)
                    if not chunk:
                        break
                    buf += chunk
        finally:
            wait_status = self._kill_all(pid)
            os.close(data_r)
        if len(results) < len(sources):  # the source being compiled broke the child
            if verdict is None:
                verdict, _ = _classify(wait_status, b"", self._new_oom_kill())
                verdict = "killed" if verdict in ("ok", "error") else verdict
            seconds = time.monotonic() - started
            results.append((None, {"status": verdict, "exit_code": None, "stdout": "", "duration_s": round(seconds, 6),
                                   "stderr": f"sandbox: compiling the program ended in {verdict}\n"}, seconds))
        return results

    def run_item(self, req: dict, prelude, compiled, compile_s: float = 0.0) -> dict:
        """One item in a child of its own; its result. ``compiled`` and ``compile_s`` come from
        :meth:`compile_chunk` (its time counts against the item's limit). Raises (and the worker
        must then stop) when the item's isolation could not be set up or what it left could not be
        removed for certain."""
        cfg = self.cfg
        self.runs += 1
        code = req["code"]
        # The same path for every item: an item's result must not depend on its place in a batch.
        workdir = os.path.dirname(sys.argv[0])
        if not cfg.item_namespaces:  # no namespaces (not root): a folder of the worker's scratch space
            _remove_tree(workdir)
        timeout_s = max(float(req["timeout_s"]) - compile_s, 0.001)
        memory_mb = int(req["memory_mb"])
        cap = int(req["output_limit_bytes"])
        if memory_mb != self.memory_mb:
            cfg.cg.set_memory(memory_mb)
            self.memory_mb = memory_mb
        stdin = req.get("stdin", "")
        if stdin:  # a file, not a pipe: no writer to babysit, and the program may seek it
            stdin_fd = os.memfd_create("stdin", 0)
            _write_all(stdin_fd, stdin.encode("utf-8", errors="surrogateescape"))
            os.lseek(stdin_fd, 0, os.SEEK_SET)
        else:
            stdin_fd = self.devnull
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ready_r, ready_w = os.pipe()  # the child writes one byte once it is confined
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                _child(self.confinement, prelude, compiled, code, workdir, stdin_fd, out_w, err_w, ready_w,
                       timeout_s, memory_mb)
            except BaseException as exc:  # noqa: BLE001 - set-up failed: say so on the run's stderr
                try:
                    os.write(2, f"sandbox: run set-up failed: {exc!r}\n".encode())
                except OSError:
                    pass
            finally:
                os._exit(125)
        for fd in (stdin_fd, out_w, err_w, ready_w):
            if fd != self.devnull:
                os.close(fd)
        try:
            outcome = self._supervise(pid, out_r, err_r, start + timeout_s, cap)
            confined = os.read(ready_r, 1) == b"I"  # every writer is dead now: no wait
        finally:
            for fd in (out_r, err_r, ready_r):
                os.close(fd)
        duration = time.monotonic() - start + compile_s
        status, exit_code, out, err, wait_status = outcome
        if not confined and status != "timeout":
            raise WorkerBroken(f"an item's confinement failed: {err[-500:].decode('utf-8', 'replace')}")
        if not cfg.item_namespaces:
            _remove_tree(workdir)
        if status is None:
            status, exit_code = _classify(wait_status, err, self._new_oom_kill())
        return {
            "status": status,
            "exit_code": exit_code,
            "stdout": out.decode("utf-8", errors="replace"),
            "stderr": err.decode("utf-8", errors="replace"),
            "duration_s": round(duration, 6),
        }

    def _new_oom_kill(self) -> bool:
        """Did the kernel OOM-kill a process of this run (our cgroup's counter moved)?"""
        count = self.cfg.cg.oom_kills()
        new, self.oom_seen = count > self.oom_seen, count
        return new

    def _supervise(self, pid, out_r, err_r, deadline, cap):
        """Collect output until the child exits, the deadline passes or the cap is hit; then kill
        everything the run left behind and drain what it wrote."""
        bufs = {fd: bytearray() for fd in (out_r, err_r) if fd is not None}
        poller = select.poll()
        for fd in bufs:
            poller.register(fd, select.POLLIN)
        try:
            pidfd = os.pidfd_open(pid)
            poller.register(pidfd, select.POLLIN)
        except (AttributeError, OSError):
            pidfd = None
        open_fds, status, wait_status = set(bufs), None, None
        try:
            while True:
                if wait_status is None:
                    done, st = os.waitpid(pid, os.WNOHANG)
                    if done:
                        wait_status = st
                if wait_status is not None:
                    break  # child gone: kill whatever it left (which may hold the pipes), then drain
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    status = "timeout"
                    break
                wait_ms = remaining * 1000 if pidfd is not None else min(remaining * 1000, 10)
                for fd, _ in poller.poll(max(1, int(wait_ms))):
                    if fd == pidfd:
                        poller.unregister(pidfd)
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        poller.unregister(fd)
                        open_fds.discard(fd)
                    else:
                        bufs[fd] += chunk
                        if len(bufs[fd]) > cap:
                            status = "output_limit"
                if status:
                    break
        finally:
            if pidfd is not None:
                os.close(pidfd)
            reaped = self._kill_all(pid)
            if wait_status is None:
                wait_status = reaped
        for fd in list(open_fds):  # every writer is dead now: read to EOF, still capped
            while len(bufs[fd]) <= cap:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                bufs[fd] += chunk
        if status is None and any(len(b) > cap for b in bufs.values()):
            status = "output_limit"
        out, err = bytes(bufs[out_r][:cap]), bytes(bufs.get(err_r, b"")[:cap])
        return status, None, out, err, wait_status

    def _kill_all(self, pid: int):
        """Kill and reap every process of the run; return the run child's wait status if reaped."""
        child_status = None
        while True:
            if self.is_init:
                try:
                    os.kill(-1, signal.SIGKILL)  # init: everyone else in our pid namespace
                except ProcessLookupError:
                    pass
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                for kid in _children():
                    try:
                        os.kill(kid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            try:
                got, st = os.waitpid(-1, 0)
            except ChildProcessError:
                return child_status
            if got == pid:
                child_status = st


def _compile(source: str, filename: str):
    """A code object, or the exception compiling raised: a SyntaxError, a ValueError (a NUL byte),
    or what a hostile source provokes (RecursionError, MemoryError). Called under a memory limit: in
    the supervisor within ``_address_space_limit``, or in a confined compile child."""
    try:  # dont_inherit: this file's __future__ imports must not change the program
        return compile(source, filename, "exec", dont_inherit=True)
    except Exception as exc:  # noqa: BLE001 - any compile failure is the item's error
        return exc


def _remove_tree(path: str) -> None:
    """Remove an item's folder in the worker's scratch space (the mode without namespaces); raises
    when anything is left, so that the worker is replaced rather than hand a later item leftovers."""
    import shutil

    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            for root, dirs, _ in os.walk(path):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
            shutil.rmtree(path)
        else:
            os.unlink(path)
    if os.path.lexists(path):
        raise WorkerBroken(f"could not remove {path}")


class _address_space_limit:
    """Lower this process's address-space limit to what it maps now plus ``memory_mb`` for the
    duration of a ``with``; a compile that needs more raises MemoryError (then the item's error)."""

    def __init__(self, memory_mb: int):
        self.memory_mb = memory_mb

    def __enter__(self):
        self.saved = resource.getrlimit(resource.RLIMIT_AS)
        mapped = int(_read_file("/proc/self/statm").split()[0]) * resource.getpagesize()
        soft, hard = self.saved
        wanted = mapped + self.memory_mb * 1024 * 1024
        if hard != resource.RLIM_INFINITY:
            wanted = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))
        return self

    def __exit__(self, *exc) -> None:
        resource.setrlimit(resource.RLIMIT_AS, self.saved)


def _read_file(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _compile_stream(sources: list[tuple], hard_mb: int, fd: int) -> None:
    """In the confined compile child: each source compiled under its own memory limit, written to
    ``fd`` as a frame (``C`` + marshalled code, or ``X`` + JSON [exception name, args])."""
    import marshal

    for source, memory_mb, _, filename in sources:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 1024 * 1024, hard_mb * 1024 * 1024))
        result = _compile(source, filename)
        payload = None
        if not isinstance(result, BaseException):
            try:
                payload = b"C" + marshal.dumps(result)
            except Exception as exc:  # noqa: BLE001 - a code object too deep or too large to send
                result = exc
        if payload is None:
            payload = b"X" + json.dumps([type(result).__name__, list(result.args)], default=str).encode()
        del result
        _write_all(fd, _HEADER.pack(len(payload)) + payload)


# Exceptions compiling may raise, rebuilt in the supervisor from their name and arguments (the child
# sends data, never a pickle).
_COMPILE_ERRORS = {cls.__name__: cls for cls in (SyntaxError, IndentationError, TabError, ValueError, TypeError,
                                                 RecursionError, MemoryError, OverflowError, SystemError)}


def _decode_compiled(payload: bytes):
    if payload[:1] == b"C":
        import marshal

        return marshal.loads(payload[1:])
    name, args = json.loads(payload[1:])
    cls = _COMPILE_ERRORS.get(name, SyntaxError)
    if issubclass(cls, SyntaxError) and len(args) == 2 and isinstance(args[1], list):
        args = [args[0], tuple(args[1])]
    try:
        return cls(*args)
    except Exception:  # noqa: BLE001 - arguments its constructor refuses
        return cls(str(args))


def _error_text(exc: BaseException) -> str:
    """What the interpreter prints for an exception raised without a traceback (a compile error)."""
    import traceback as tb

    return "".join(tb.format_exception_only(type(exc), exc))


def _children() -> list[int]:
    """Our direct children (as subreaper, orphaned grandchildren land here)."""
    me, kids = os.getpid(), []
    try:
        for tid in os.listdir(f"/proc/{me}/task"):
            with open(f"/proc/{me}/task/{tid}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
        return kids
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == me:
                        kids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return kids


def _classify(wait_status, stderr: bytes, oom: bool):
    if wait_status is None:
        return "killed", None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU:
            return "timeout", -sig
        if oom:
            return "memory", -sig
        return "killed", -sig
    code = os.WEXITSTATUS(wait_status)
    if code == 0:
        return "ok", 0
    last = stderr.rstrip().rsplit(b"\n", 1)[-1]
    if oom or last.startswith(b"MemoryError"):
        return "memory", code
    return "error", code


# ---------------------------------------------------------------- inside the forked child

class Confinement:
    """What an item's process does, as root, before any untrusted byte is touched: new mount and IPC
    namespaces with fresh scratch mounts (nothing an earlier item made exists there, whatever names,
    depths or links it used; its System V objects and POSIX queues went with its IPC namespace),
    then its rlimits, its uid and the syscall filter. Prepared once in the supervisor (ctypes calls,
    mount arguments, the filter's ``sock_fprog``) so that a child only makes system calls."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.libc = None
        self.filter = None
        if cfg.item_namespaces or cfg.seccomp:
            import ctypes

            self.libc = _libc()
            for name in ("unshare", "mount", "prctl"):
                getattr(self.libc, name)  # resolve the symbols before the forks
        if cfg.item_namespaces:
            # Our mounts private, so that an item's never propagate back (Docker's may be shared).
            _check(self.libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
            self.mounts = [(path.encode(), f"size={mb}m,nr_inodes={inodes},mode=1777".encode())
                           for path, mb, inodes in cfg.item_mounts if os.path.isdir(path)]
            # The worker's POSIX queue folder (Docker mounts one) would let an item make queues in the
            # worker's IPC namespace; an item's queues live in its own. /sys and the channel's folder
            # are not the items' business, and every mount left is copied for each item.
            for path in cfg.unmount:
                if os.path.ismount(path):
                    _check(self.libc.umount2(path.encode(), MNT_DETACH))
            self.rebind = list(cfg.rebind)
        if cfg.seccomp:
            import binascii

            program = binascii.a2b_base64(cfg.seccomp)

            class SockFprog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

            self._filter_buf = ctypes.create_string_buffer(program, len(program))
            self.filter = SockFprog(len(program) // 8, ctypes.addressof(self._filter_buf))
            self.filter_ref = ctypes.byref(self.filter)

    def enter(self, memory_mb: int, timeout_s: float, keep_fd: int) -> None:
        """Confine this (freshly forked) process; fds above ``keep_fd`` are closed."""
        cfg = self.cfg
        if cfg.item_namespaces:
            libc = self.libc
            _check(libc.unshare(CLONE_NEWNS | CLONE_NEWIPC))
            # Opened in the new namespace (a bind's source must be one of its own mounts), before the
            # fresh scratch covers them.
            keep = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in self.rebind]
            flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
            for path, options in self.mounts:
                _check(libc.mount(b"tmpfs", path, b"tmpfs", flags, options))
            for path, fd in keep:
                os.makedirs(path, exist_ok=True)
                target = path.encode()
                _check(libc.mount(f"/proc/self/fd/{fd}".encode(), target, None, MS_BIND | MS_REC, None))
                _check(libc.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None))
        os.closerange(keep_fd + 1, 65536)  # the protocol channel above all
        cpu = int(timeout_s) + 2
        limits = [
            (resource.RLIMIT_AS, memory_mb * 1024 * 1024),
            (resource.RLIMIT_CPU, cpu),
            (resource.RLIMIT_FSIZE, cfg.fsize_mb * 1024 * 1024),
            (resource.RLIMIT_NOFILE, 256),
            (resource.RLIMIT_CORE, 0),
        ]
        if cfg.uid is not None:  # per-worker uid, so the count is this run's alone
            limits.append((resource.RLIMIT_NPROC, cfg.nproc))
        for which, value in limits:
            try:
                resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))
            except (ValueError, OSError):
                pass
        if cfg.uid is not None:
            os.setgroups([])
            os.setresgid(cfg.uid, cfg.uid, cfg.uid)
            os.setresuid(cfg.uid, cfg.uid, cfg.uid)
        elif cfg.undumpable:
            _prctl(PR_SET_DUMPABLE, 1)
        if self.filter is not None:
            _check(self.libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
            _check(self.libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self.filter_ref, 0, 0))


def _child(confinement, prelude, compiled, code, workdir, stdin_fd, out_w, err_w, ready_w, timeout_s, memory_mb):
    os.setsid()
    os.dup2(stdin_fd, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(ready_w, 3)
    # The only handler the worker changed. _signal's C function: signal.signal's enum wrapping costs a
    # third of a millisecond of copy-on-write faults here.
    _signal.signal(signal.SIGINT, _signal.default_int_handler)
    confinement.enter(memory_mb, timeout_s, keep_fd=3)
    os.write(3, b"I")
    os.close(3)
    # From here on the process is the item's: its files, its compile, under its limits.
    os.mkdir(workdir, 0o700)
    program = os.path.join(workdir, "program.py")
    fd = os.open(program, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _write_all(fd, code.encode("utf-8", errors="surrogateescape"))
    finally:
        os.close(fd)
    os.chdir(workdir)
    _exec_program(prelude, compiled, workdir)


_MAIN: types.ModuleType | None = None  # the items' __main__, made once, never run in the supervisor


def _prepare_item_interpreter(program: str) -> None:
    """What every item's interpreter starts from, set up once in the supervisor so that children
    do not pay copy-on-write faults for it: ``sys.std*`` over fds 0-2 (in the supervisor those are
    /dev/null and never written), ``sys.argv`` and a pristine ``__main__`` module."""
    global _MAIN
    stdin = io.open(0, "r", encoding="utf-8", closefd=False)
    stdout = io.open(1, "w", encoding="utf-8", closefd=False)
    stderr = io.TextIOWrapper(io.open(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace",
                              line_buffering=True)
    sys.stdin = sys.__stdin__ = stdin
    sys.stdout = sys.__stdout__ = stdout
    sys.stderr = sys.__stderr__ = stderr
    sys.argv = [program]
    _MAIN = types.ModuleType("__main__")
    _MAIN.__file__ = program
    _MAIN.__builtins__ = builtins
    sys.modules["__main__"] = _MAIN


def _exec_program(prelude, compiled, workdir: str) -> None:
    """Run the compiled program as ``python3 program.py`` would, then exit with its status.

    ``prelude`` (a batch's shared code object, None, or the text of its compile error) runs first
    in the same ``__main__`` namespace. When it defines :data:`ITEM_HOOK`, the item's compiled code
    is handed to that function instead of being executed (a runtime that runs the program its own
    way: tracing it, or checking it): a code object, or the exception that compiling raised.
    """
    sys.path.insert(0, workdir)
    main = _MAIN
    exit_code = 0
    try:
        if isinstance(prelude, str):
            sys.stderr.write(prelude)
            exit_code = 1
        else:
            if prelude is not None:
                exec(prelude, main.__dict__)
            hook = main.__dict__.get(ITEM_HOOK) if prelude is not None else None
            if callable(hook):
                hook(compiled)
            elif isinstance(compiled, BaseException):
                sys.excepthook(type(compiled), compiled.with_traceback(None), None)
                exit_code = 1
            else:
                exec(compiled, main.__dict__)
    except SystemExit as exc:
        exit_code = _exit_code(exc)
    except BaseException as exc:  # noqa: BLE001 - what the interpreter would print
        tb = exc.__traceback__
        tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb  # hide this frame
        try:
            sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        except BaseException:  # noqa: BLE001 - a traceback too deep to print
            pass
        exit_code = 1
    try:
        if "threading" in sys.modules:  # join non-daemon threads, as interpreter shutdown does
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
    except SystemExit as exc:
        exit_code = _exit_code(exc)
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a closed or broken stdout, like python's 120
            exit_code = exit_code or 120
    os._exit(exit_code & 0xFF)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    try:
        print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001
        pass
    return 1


# ---------------------------------------------------------------- main loop

def _preload(modules) -> list[str]:
    """Import the batch's ``preload`` modules (libraries from the site folders, such as numpy), so
    that every item forked afterwards finds them loaded; the ones that imported. Their thread pools
    are kept to one thread: a fork copies only the thread that forks."""
    done = []
    for name in modules:
        try:
            __import__(name)
            done.append(name)
        except Exception:  # noqa: BLE001 - an item that needs it will fail on its own import
            pass
    return done


def _reexec(raw: dict, cfg: Config, environment: dict, channel: tuple[int, int], hash_seed: int | None,
            preload: list[str], pending: dict) -> None:
    """Replace this interpreter by a fresh one (same pid, same namespaces, same channel) under
    ``PYTHONHASHSEED=hash_seed`` and with ``preload`` imported, which then runs ``pending`` before
    serving on. String hashing is seeded once per interpreter, and an import cannot be undone: a new
    interpreter is the only way to change either."""
    batch = os.memfd_create("sandbox-batch", 0)
    _write_all(batch, json.dumps(pending).encode())
    keep = [*channel, batch, *(fd for _, fd in cfg.cg.limits), *cfg.cg.oom]
    script = raw.get("script_fd")
    if script is not None:
        keep.append(script)
    for fd in keep:
        os.set_inheritable(fd, True)
    raw = {**raw, "channel": list(channel), "pending_fd": batch, "hash_seed": hash_seed, "preload": preload,
           "cg": cfg.cg.to_wire()}
    path = f"/proc/self/fd/{script}" if script is not None else os.path.abspath(__file__)
    # Not -I: it implies -E, which would ignore PYTHONHASHSEED; the environment is ours anyway.
    env = {**environment, **({"PYTHONHASHSEED": str(hash_seed)} if hash_seed is not None else {}),
           **({name: "1" for name in THREAD_VARIABLES} if preload else {})}
    os.execve(sys.executable, [sys.executable, "-s", "-S", "-P", path, json.dumps(raw)], env)


def _serve(worker: Worker, raw: dict, cfg: Config, rfd: int, wfd: int, pending: dict | None) -> int:
    """Answer batch frames until EOF: one result frame per item."""
    while True:
        req = pending if pending is not None else read_frame(rfd)
        pending = None
        if req is None:
            return 0
        batch = req.get("batch") or {}
        seed = batch.get("hash_seed")
        preload = list(batch.get("preload") or [])
        if (seed is not None and seed != raw.get("hash_seed")) or preload != list(raw.get("preload") or []):
            _reexec(raw, cfg, worker.environment, (rfd, wfd), raw.get("hash_seed") if seed is None else int(seed),
                    preload, req)
        items = batch.get("items") or []
        oversized = [len(item["code"]) > MAX_CODE_CHARS for item in items]
        prelude, compiled = worker.compile_chunk(batch.get("prelude") or "",
                                                 [item for item, big in zip(items, oversized) if not big])
        compiled.reverse()
        for item, big in zip(items, oversized):
            if big:
                reply = {"status": "error", "exit_code": None, "stdout": "", "duration_s": 0.0,
                         "stderr": f"sandbox: the program has {len(item['code'])} characters; items are capped at "
                                   f"{MAX_CODE_CHARS}\n"}
            else:
                code, verdict, seconds = compiled.pop()
                # No catch: a failure here means an item's isolation is not certain, so the worker stops
                # (fail closed); the host replaces it and runs the item again on the new one.
                reply = verdict or worker.run_item(item, prelude, code, seconds)
            _write_all(wfd, encode_frame(reply))


def main() -> int:
    raw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    cfg = Config(raw)
    if raw.get("serving"):  # re-executed inside the namespaces and the minimal root
        cfg.cg = CgroupFiles([], wire=raw["cg"])
    elif raw.get("channel"):  # re-executed under another hash seed
        cfg.cg = CgroupFiles([], wire=raw["cg"])
    else:
        joined = []
        for d in cfg.cgroups:  # before unshare, so that every process of every run is inside
            try:
                with open(os.path.join(d, "cgroup.procs"), "w") as fh:
                    fh.write(str(os.getpid()))
                joined.append(d)
            except OSError:
                pass
        cfg.cgroups = joined
        cfg.cg = CgroupFiles(joined)  # opened now: the minimal root has no /sys
        if cfg.isolate:
            script = os.memfd_create("sandbox-worker", 0)  # this file, readable after the chroot
            with open(__file__, "rb") as fh:
                _write_all(script, fh.read())
            _enter_namespaces(cfg)
            for fd in (script, *(fd for _, fd in cfg.cg.limits), *cfg.cg.oom):
                os.set_inheritable(fd, True)  # the cgroup files are needed after the exec too
            # Start afresh (-S, no ctypes, nothing of the set-up): a worker half the size forks faster.
            raw = {**raw, "serving": True, "cgroups": joined, "cg": cfg.cg.to_wire(), "script_fd": script,
                   "site_dirs": cfg.site_dirs, "rebind": cfg.rebind}  # their paths inside the minimal root
            os.execv(sys.executable, [sys.executable, "-I", "-S", f"/proc/self/fd/{script}", json.dumps(raw)])
    pending = None
    if raw.get("channel"):
        rfd, wfd = raw["channel"]
        with os.fdopen(raw.pop("pending_fd"), "rb") as fh:
            fh.seek(0)
            pending = json.loads(fh.read())
    else:
        # Keep the protocol on private fds; 0/1 become /dev/null so nothing stray corrupts it.
        if raw.get("connect"):  # Docker on this machine: the host's unix socket, not the attach stream
            import socket

            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.connect(raw["connect"])
            rfd = wfd = conn.detach()
        else:
            rfd, wfd = os.dup(0), os.dup(1)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
    for fd in {rfd, wfd}:
        os.set_inheritable(fd, False)
    secret = os.environ.pop(SECRET_VARIABLE, "").encode()
    try:
        worker = Worker(cfg, raw.get("preload") or [])
        if pending is None:
            info = {"ready": True, "isolated": bool(raw.get("serving")), "python": sys.version.split()[0],
                    "cgroups": cfg.cgroups, "pid1": worker.is_init, "item_namespaces": cfg.item_namespaces,
                    "seccomp": bool(cfg.seccomp), "proof": _proof(secret)}
            del secret  # items are forks of this process: they need not find it (it proves nothing now)
            probe_item = {"code": "print('confined')", "timeout_s": 10.0, "memory_mb": 256, "output_limit_bytes": 1024}
            _, [(code, _, _)] = worker.compile_chunk("", [probe_item])
            probe = worker.run_item(probe_item, None, code)
            if probe["status"] != "ok" or probe["stdout"] != "confined\n":
                info = {**info, "ready": False, "error": f"an item could not be confined: {probe}"}
            _write_all(wfd, encode_frame(info))
        return _serve(worker, raw, cfg, rfd, wfd, pending)
    except WorkerBroken as exc:
        print(f"sandbox worker stopped: {exc}", file=sys.__stderr__ or sys.stderr)
        return 3


def _proof(secret: bytes) -> str:
    """That this worker holds the secret its host started it with (HMAC-SHA256 of a fixed message;
    the secret is new for every worker started, so a proof cannot serve another)."""
    import hashlib
    import hmac

    return hmac.new(secret, PROOF_MESSAGE, hashlib.sha256).hexdigest()


if __name__ == "__main__":
    sys.exit(main())
