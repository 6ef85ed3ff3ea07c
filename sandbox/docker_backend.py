"""Docker backend: a pool of warm, locked-down containers, each running the in-sandbox worker.

Every container: no network, read-only root, small noexec tmpfs on /tmp, /var/tmp and /dev/shm,
no-new-privileges, memory/pid/CPU limits, no log driver (results never touch disk). The worker is the
container's PID 1 and runs as root with seven capabilities (set uids, kill, and SYS_ADMIN to give
every item new mount and IPC namespaces with fresh scratch mounts); every item runs as an
unprivileged uid of its own per worker with none, under the seccomp filter, so an item cannot
signal, trace, renice or otherwise touch the supervisor, and after each item the supervisor kills
every other process in the container.
With a daemon on this machine the host talks to each worker over a unix socket in a folder of that
worker's alone (root's, 0700, mounted into its container only, removed once the worker connects);
the host accepts the connection only from the container's PID 1 (SO_PEERCRED) and only after the
worker proves the secret it was started with. With a remote daemon, over the attach stream. Either
way a run costs no ``docker exec`` and no container start. Containers carry labels, are removed on
close and at interpreter exit, and ones left by a dead process on this host are removed at the next
start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sandbox.contract import ExecutionRequest, SandboxError
from sandbox.local import default_site_dirs, item_mounts
from sandbox.pool import WorkerHandle
from sandbox.seccomp import filter_for_worker
from sandbox.worker import SECRET_VARIABLE, SITE_ROOT

log = logging.getLogger("sandbox")
HERE = Path(__file__).resolve().parent
LABEL = "org.stepcode.sandbox"
DEFAULT_BASES = ("stepcode-sandbox-base:bookworm", "python:3.11-slim")
# The supervisor's capabilities: drop to the items' uid, kill them, and (SYS_ADMIN) give every item
# new mount and IPC namespaces with fresh scratch mounts. Items keep none of them.
SUPERVISOR_CAPS = ("SETUID", "SETGID", "KILL", "CHOWN", "FOWNER", "DAC_OVERRIDE", "SYS_ADMIN")
_MUX = struct.Struct(">BxxxI")


def image_tag() -> str:
    """``stepcode-sandbox:<hash>``: changes whenever the Dockerfile or the worker changes."""
    digest = hashlib.sha256((HERE / "Dockerfile").read_bytes() + (HERE / "worker.py").read_bytes()).hexdigest()
    return f"stepcode-sandbox:{digest[:12]}"


def docker_client(timeout: int = 60):
    import docker

    return docker.from_env(timeout=timeout)


def docker_unavailable_reason() -> str | None:
    """None when a Docker daemon answers, else why not (for the log)."""
    try:
        client = docker_client(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except ImportError:
        return "the docker package is not installed"
    except Exception as exc:  # noqa: BLE001 - any failure means: use the local backend
        return f"no Docker daemon answers ({type(exc).__name__})"


def ensure_image(client, tag: str | None = None, base: str | None = None) -> str:
    """Return the sandbox image tag, building it first when missing.

    The base is the first of ``base``, $SANDBOX_BASE_IMAGE, the locally built Debian base and
    ``python:3.11-slim`` that exists locally (or, for the last, can be pulled). With none of them and
    a source checkout, ``scripts/sandbox_image.sh`` makes the base with debootstrap (about a minute).
    """
    import docker.errors

    tag = tag or image_tag()
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    candidates = [b for b in (base, os.environ.get("SANDBOX_BASE_IMAGE"), *DEFAULT_BASES) if b]
    chosen = None
    for candidate in candidates:
        try:
            client.images.get(candidate)
            chosen = candidate
            break
        except docker.errors.ImageNotFound:
            continue
    script = HERE.parent / "scripts" / "sandbox_image.sh"
    if chosen is None and script.exists():
        log.info("sandbox: building the image with %s (first time only)", script)
        env = {**os.environ, "SANDBOX_IMAGE": tag}
        out = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise SandboxError(f"{script} failed: {out.stderr[-2000:]}")
        return tag
    if chosen is None:
        try:
            client.images.pull("python", tag="3.11-slim")
            chosen = "python:3.11-slim"
        except docker.errors.APIError as exc:
            raise SandboxError(f"no base image for the sandbox and none can be pulled: {exc}") from exc
    log.info("sandbox: building %s from %s", tag, chosen)
    try:
        client.images.build(path=str(HERE), dockerfile="Dockerfile", tag=tag, buildargs={"BASE_IMAGE": chosen},
                            rm=True, forcerm=True)
    except docker.errors.DockerException as exc:
        raise SandboxError(f"building {tag} failed: {exc}") from exc
    _drop_old_tags(client, keep=tag)
    return tag


def _drop_old_tags(client, keep: str) -> None:
    """Builds for other Dockerfile/worker hashes are dead weight; in-use ones simply stay."""
    repo = keep.split(":")[0]
    for image in client.images.list(name=repo):
        for old in image.tags:
            if old != keep and old.startswith(repo + ":"):
                try:
                    client.images.remove(old)
                except Exception:  # noqa: BLE001
                    pass


def remove_stale_containers(client) -> int:
    """Remove sandbox containers whose owning process on this host is gone; returns how many."""
    removed = 0
    host = socket.gethostname()
    for c in client.containers.list(all=True, filters={"label": LABEL}):
        labels = c.labels or {}
        if labels.get(f"{LABEL}.host") != host:
            continue
        try:
            os.kill(int(labels.get(f"{LABEL}.pid", "0")), 0)
            continue  # owner alive
        except (ProcessLookupError, ValueError):
            pass
        except PermissionError:
            continue
        try:
            c.remove(force=True)
            removed += 1
        except Exception:  # noqa: BLE001 - racing another cleaner is fine
            pass
    return removed


class DockerBackend:
    """Factory for warm containers; ``memory_mb`` is the largest per-run memory limit it accepts."""

    name = "docker"

    def __init__(self, *, image: str | None = None, memory_mb: int = 2048, pids_limit: int = 128,
                 tmpfs_mb: int = 64, cpus: float = 1.0, client=None, direct: bool | None = None, nproc: int = 64,
                 uid_base: int | None = None, site_dirs: list[str] | None = None):
        try:
            self.client = client or docker_client()
            self.client.ping()
        except Exception as exc:  # noqa: BLE001
            raise SandboxError(f"no Docker daemon answers: {exc}") from exc
        self.image = image or ensure_image(self.client)
        self.memory_mb, self.pids_limit, self.tmpfs_mb, self.cpus = memory_mb, pids_limit, tmpfs_mb, cpus
        # Items run as a uid of their own per worker, random per pool (as the local backend does):
        # RLIMIT_NPROC counts a uid's processes across every container of the host.
        self.nproc = nproc
        self.uid_base = uid_base if uid_base is not None else 200_000 + secrets.randbelow(1_000_000) * 64
        self.session = uuid.uuid4().hex[:12]
        # With a daemon on this machine, each worker talks over a unix socket of its own (in a folder
        # of its own that only its container mounts) instead of the attach stream that dockerd relays.
        if direct is None:
            direct = self.client.api.base_url.startswith("http+docker://localhost")
        self.direct = direct
        # The host's package folders, bind-mounted read-only at the same paths (a daemon on this
        # machine only: a remote one does not see them).
        self.site_dirs = (default_site_dirs() if site_dirs is None else [str(d) for d in site_dirs]) if direct else []
        self.seccomp = filter_for_worker()
        stale = remove_stale_containers(self.client)
        if stale:
            log.info("sandbox: removed %d container(s) left by dead processes", stale)

    def validate(self, request: ExecutionRequest) -> None:
        if request.memory_mb > self.memory_mb:
            raise ValueError(f"memory_mb={request.memory_mb} exceeds this Docker pool's limit of {self.memory_mb}")

    def labels(self) -> dict:
        return {LABEL: "1", f"{LABEL}.session": self.session, f"{LABEL}.pid": str(os.getpid()),
                f"{LABEL}.host": socket.gethostname()}

    def make_worker(self, index: int) -> "DockerWorker":
        return DockerWorker(self, index)

    def close(self) -> None:
        """Belt and braces: remove anything of this session's that a handle did not."""
        try:
            for c in self.client.containers.list(all=True, filters={"label": f"{LABEL}.session={self.session}"}):
                c.remove(force=True)
        finally:
            self.client.close()


class DockerWorker(WorkerHandle):
    def __init__(self, backend: DockerBackend, index: int):
        super().__init__()
        self.backend, self.index = backend, index
        self.label = f"docker worker {index}"
        self.container = None
        self.attached = None
        self.sock = None
        self.chan = None  # the direct unix-socket channel, when the backend has one
        self.raw = bytearray()
        self.err = bytearray()
        self.eof = False

    def _spawn(self) -> None:
        from docker.types import LogConfig

        b = self.backend
        inside = [f"{SITE_ROOT}/{i}" for i in range(len(b.site_dirs))]  # fixed paths, outside the scratch dirs
        cfg = {"scratch": "/tmp", "fsize_mb": 16, "site_dirs": inside, "uid": b.uid_base + self.index,
               "nproc": b.nproc, "item_namespaces": True, "item_mounts": item_mounts(b.tmpfs_mb),
               "unmount": ["/dev/mqueue", "/sys", "/ipc"], "seccomp": b.seccomp}
        self.raw, self.err, self.eof = bytearray(), bytearray(), False
        self.secret = secrets.token_hex(32)
        listener = folder = None
        volumes = {folder: {"bind": path, "mode": "ro"} for folder, path in zip(b.site_dirs, inside)}
        if b.direct:
            # A folder of this worker's alone (0700, root's), mounted into its container only; the
            # socket is unlinked once the worker connects, so a replacement opens no window to others.
            folder = tempfile.mkdtemp(prefix="stepcode-sbx-ipc-")
            path = os.path.join(folder, "worker.sock")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(1)
            cfg["connect"] = "/ipc/worker.sock"
            volumes[folder] = {"bind": "/ipc", "mode": "ro"}
        self.container = b.client.containers.create(
            b.image, command=[json.dumps(cfg)], stdin_open=True, tty=False, network_disabled=True,
            environment={SECRET_VARIABLE: self.secret},
            network_mode="none", read_only=True,
            tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={b.tmpfs_mb}m,nr_inodes=4096,mode=1777",
                   "/var/tmp": "rw,nosuid,nodev,noexec,size=16m,nr_inodes=1024,mode=1777",
                   "/dev/shm": "rw,nosuid,nodev,noexec,size=16m,nr_inodes=1024,mode=1777"}, ipc_mode="none",
            # The supervisor is root with just what supervising needs; every item drops to its own uid.
            cap_drop=["ALL"], cap_add=list(SUPERVISOR_CAPS), security_opt=["no-new-privileges"], user="0:0",
            mem_limit=f"{b.memory_mb + 64}m", memswap_limit=f"{b.memory_mb + 64}m", pids_limit=b.pids_limit,
            nano_cpus=int(b.cpus * 1e9), labels=b.labels(), log_config=LogConfig(type="none"),
            name=f"stepcode-sandbox-{b.session}-{self.index}-{self.replacements}", volumes=volumes)
        # Hold the SDK's wrapper for the container's lifetime: it keeps the HTTP response alive, and
        # when the garbage collector frees that response it closes the socket under us.
        self.attached = b.client.api.attach_socket(self.container.id, params={"stdin": 1, "stdout": 1,
                                                                               "stderr": 1, "stream": 1})
        self.sock = getattr(self.attached, "_sock", self.attached)
        self.container.start()
        if listener is not None:
            listener.settimeout(15)
            try:
                self.chan, _ = listener.accept()
            except OSError as exc:
                # e.g. a daemon that sees another filesystem than ours: use the attach stream from now on
                log.warning("%s did not connect over %s (%s): falling back to the attach stream", self.label,
                            folder, exc)
                b.direct = False
                self._destroy()
                self._spawn()
            finally:
                listener.close()
                shutil.rmtree(folder, ignore_errors=True)  # nothing else can connect: /ipc is empty
            if self.chan is not None:
                self._check_peer()

    def _check_peer(self) -> None:
        """The process at the other end must be the container's PID 1 (the kernel's word, SO_PEERCRED);
        the ready frame's proof of the secret comes on top."""
        pid, _, _ = struct.unpack("3i", self.chan.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("3i")))
        self.container.reload()
        if pid != self.container.attrs["State"].get("Pid"):
            self._destroy()
            raise SandboxError(f"{self.label}: process {pid} connected, not the container's worker")

    def _send(self, data: bytes) -> None:
        target = self.chan or self.sock
        target.settimeout(60)
        target.sendall(data)

    def _demux(self) -> bytes:
        out = bytearray()
        while len(self.raw) >= 8:
            stream, size = _MUX.unpack_from(self.raw)
            if len(self.raw) < 8 + size:
                break
            payload = self.raw[8 : 8 + size]
            del self.raw[: 8 + size]
            if stream == 1:
                out += payload
            elif len(self.err) < 65536:
                self.err += payload
        return bytes(out)

    def _read_some(self, timeout: float) -> bytes:
        if self.chan is not None:
            self.chan.settimeout(max(timeout, 0.001))
            try:
                return self.chan.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError from None
        deadline = time.monotonic() + timeout
        while True:
            out = self._demux()
            if out:
                return out
            if self.eof:
                return b""
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 20)
            except socket.timeout:
                raise TimeoutError from None
            if not data:
                self.eof = True
            self.raw += data

    def diagnostics(self) -> str:
        return "container stderr: " + self.err[-2000:].decode("utf-8", "replace")

    def _death_status(self) -> str:
        try:
            self.container.reload()
            if self.container.attrs["State"].get("OOMKilled"):
                return "memory"
        except Exception:  # noqa: BLE001
            pass
        return "killed"

    def _destroy(self) -> None:
        sock, self.sock = self.sock, None
        attached, self.attached = self.attached, None
        chan, self.chan = self.chan, None
        for closable in (chan, sock, attached):
            if closable is not None:
                try:
                    closable.close()
                except OSError:
                    pass
        container, self.container = self.container, None
        if container is not None:
            try:
                container.remove(force=True)
            except Exception as exc:  # noqa: BLE001
                import docker.errors

                if not isinstance(exc, docker.errors.NotFound):
                    raise
