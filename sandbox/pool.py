"""A pool of warm workers behind one synchronous API, shared by both backends.

Each worker runs one program at a time; ``run_batch`` keeps every worker busy from a shared queue
(one host thread per worker, which only waits on I/O; the next request already waits in the worker's
pipe when a run ends) and returns results in request order. A
worker whose channel breaks or stalls is replaced, and the run it held gets a fitting status.
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import struct
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

from sandbox.contract import ExecutionRequest, ExecutionResult, SandboxError
from sandbox.worker import encode_frame

log = logging.getLogger("sandbox")
_HEADER = struct.Struct(">I")
GRACE_S = 5.0  # the worker enforces the limit itself; the host waits this much longer at most
QUEUE_FRAME_MAX = 16 * 1024  # requests up to this size may wait in the worker's pipe


class ChannelBroken(Exception):
    """The worker stopped answering (EOF, garbage, or no reply in time)."""


class FrameReader:
    """Reassembles length-prefixed JSON frames from arbitrary chunks."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data

    def pop(self) -> dict | None:
        import json

        if len(self.buf) < 4:
            return None
        (size,) = _HEADER.unpack_from(self.buf)
        if len(self.buf) < 4 + size:
            return None
        body = bytes(self.buf[4 : 4 + size])
        del self.buf[: 4 + size]
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ChannelBroken(f"bad frame: {exc}") from exc


class WorkerHandle:
    """One warm worker. Subclasses provide the transport: ``_spawn``, ``_send``, ``_read_some``,
    ``_destroy`` and ``_death_status`` (what to call a run whose worker died)."""

    label = "worker"

    def __init__(self) -> None:
        self.reader = FrameReader()
        self.info: dict = {}
        self.replacements = 0

    # transport hooks
    def _spawn(self) -> None: ...
    def _send(self, data: bytes) -> None: ...
    def _read_some(self, timeout: float) -> bytes: ...  # b"" on EOF; raises TimeoutError
    def _destroy(self) -> None: ...
    def _death_status(self) -> str:
        return "killed"

    def start(self, timeout: float = 60.0) -> None:
        self.reader = FrameReader()
        self._spawn()
        try:
            self.info = self._recv(time.monotonic() + timeout)
        except ChannelBroken as exc:
            diag = self.diagnostics()
            self._destroy()
            raise SandboxError(f"{self.label} did not start: {exc}; {diag}") from exc
        if not self.info.get("ready"):
            self._destroy()
            raise SandboxError(f"{self.label} sent {self.info!r} instead of ready")

    def diagnostics(self) -> str:
        return ""

    def _recv(self, deadline: float) -> dict:
        while True:
            frame = self.reader.pop()
            if frame is not None:
                return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChannelBroken("no reply in time")
            try:
                data = self._read_some(remaining)
            except TimeoutError:
                continue
            except OSError as exc:
                raise ChannelBroken(str(exc)) from exc
            if not data:
                raise ChannelBroken("worker closed its channel")
            self.reader.feed(data)

    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        start = time.monotonic()
        try:
            self._send(encode_frame(request.to_wire()))
            raw = self._recv(start + request.timeout_s + GRACE_S)
            return ExecutionResult.from_wire(raw)
        except (ChannelBroken, OSError, ValueError) as exc:
            return self._lost(exc, request, start)

    def _lost(self, exc: Exception, request: ExecutionRequest, start: float) -> ExecutionResult:
        """The worker broke during ``request``: its result, after the worker is replaced."""
        stalled = time.monotonic() - start >= request.timeout_s
        status = self._death_status()
        if status == "killed" and stalled:
            status = "timeout"
        log.warning("%s misbehaved (%s): replacing it", self.label, exc)
        self.replace()
        return ExecutionResult(status, None, "", f"sandbox: worker lost ({exc})", time.monotonic() - start)

    def run_stream(self, take, put) -> None:
        """Run the requests ``take()`` hands out (``(index, request)``, None when done), ``put`` each
        result, keeping a second request queued in the worker so it never waits for us between runs.
        Only small frames are queued (two always fit a pipe buffer, so a write never blocks while
        the worker writes a large result). A request queued behind one that broke the worker is run
        again on the replacement: it never got its turn."""
        inflight: collections.deque = collections.deque()  # (index, request, frame size)
        held = None  # taken, not yet sent
        exhausted = False
        ready_at = time.monotonic()  # when the head request could start running
        while True:
            while len(inflight) < 2:
                if held is None:
                    item = None if exhausted else take()
                    if item is None:
                        exhausted = True
                        break
                    held = (item[0], item[1], encode_frame(item[1].to_wire()))
                index, request, frame = held
                if inflight and (len(frame) > QUEUE_FRAME_MAX or inflight[0][2] > QUEUE_FRAME_MAX):
                    break
                if not inflight:
                    ready_at = time.monotonic()
                try:
                    self._send(frame)
                except OSError as exc:
                    held = None
                    earlier = list(inflight)  # sent to the worker that just broke: run them again
                    inflight.clear()
                    put(index, self._lost(exc, request, ready_at))
                    for again, queued, _ in earlier:
                        put(again, self.execute(queued))
                    ready_at = time.monotonic()
                    continue
                inflight.append((index, request, len(frame)))
                held = None
            if not inflight:
                if exhausted and held is None:
                    return
                continue
            index, request, _ = inflight.popleft()
            try:
                result = ExecutionResult.from_wire(self._recv(ready_at + request.timeout_s + GRACE_S))
            except (ChannelBroken, OSError, ValueError) as exc:
                put(index, self._lost(exc, request, ready_at))
                for again, queued, _ in inflight:
                    put(again, self.execute(queued))
                inflight.clear()
                ready_at = time.monotonic()
                continue
            put(index, result)
            ready_at = time.monotonic()

    def replace(self) -> None:
        self._destroy()
        self.replacements += 1
        self.start()

    def close(self) -> None:
        self._destroy()


class Sandbox:
    """The object ``open_sandbox`` yields: ``run`` and ``run_batch`` over a pool of warm workers."""

    def __init__(self, backend, workers: int):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.backend = backend
        self.name = backend.name
        self._free: queue.Queue[WorkerHandle] = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        with ThreadPoolExecutor(max_workers=min(workers, 8)) as ex:
            futures = [ex.submit(self._start_one, i) for i in range(workers)]
        self.workers: list[WorkerHandle] = []
        errors = []
        for fut in futures:
            try:
                self.workers.append(fut.result())
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        if errors:
            self.close()
            raise errors[0]
        for w in self.workers:
            self._free.put(w)
        self._finalizer = weakref.finalize(self, Sandbox._close_handles, list(self.workers), backend)
        atexit.register(self._finalizer)
        log.info("sandbox backend: %s with %d warm worker(s)", self.name, workers)

    def _start_one(self, index: int) -> WorkerHandle:
        handle = self.backend.make_worker(index)
        handle.start()
        return handle

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        return self.run_batch([request])[0]

    def run_batch(self, requests: Iterable[ExecutionRequest]) -> list[ExecutionResult]:
        """Run every request, results in request order. Bad requests raise before anything runs."""
        reqs: Sequence[ExecutionRequest] = list(requests)
        validate = getattr(self.backend, "validate", None)
        for i, r in enumerate(reqs):
            if not isinstance(r, ExecutionRequest):
                raise TypeError(f"request {i} is a {type(r).__name__}, not an ExecutionRequest")
            if validate is not None:
                validate(r)
        if self._closed:
            raise SandboxError("sandbox is closed")
        results: list[ExecutionResult | None] = [None] * len(reqs)
        pending = iter(enumerate(reqs))
        lock = threading.Lock()

        def take():
            with lock:
                return next(pending, None)

        def put(index: int, result: ExecutionResult) -> None:
            results[index] = result

        def drain() -> None:
            worker = self._free.get()
            try:
                worker.run_stream(take, put)
            finally:
                self._free.put(worker)

        n = min(len(self.workers), len(reqs))
        if n <= 1:
            drain()
        else:
            threads = [threading.Thread(target=drain, daemon=True) for _ in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise SandboxError(f"{len(missing)} run(s) got no result")
        return results  # type: ignore[return-value]

    @staticmethod
    def _close_handles(handles: list[WorkerHandle], backend) -> None:
        with ThreadPoolExecutor(max_workers=max(1, min(len(handles), 8))) as ex:
            list(ex.map(lambda h: _quietly(h.close), handles))
        _quietly(backend.close)

    def close(self) -> None:
        """Stop every worker (and container); idempotent, also run at interpreter exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()
            atexit.unregister(finalizer)
        else:
            Sandbox._close_handles(getattr(self, "workers", []), self.backend)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quietly(fn) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - closing must go on for the others
        log.warning("sandbox cleanup: %s", exc)
