"""A pool of warm workers behind one synchronous API, shared by both backends.

``run_batches`` cuts every batch into chunks (consecutive items, as many as keep every worker busy
until the end), sends each chunk to a free worker as one sandbox run (one frame: the prelude once,
then the items) and collects one result per item, in order. One host thread per worker, which only
waits on I/O. A worker whose channel breaks or stalls is replaced; the item it was running and
every item after it in the chunk are run again one by one, each alone in a sandbox run, so a run
that fails as a whole costs a re-run and nothing else.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import logging
import queue
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from sandbox.contract import Batch, ExecutionRequest, ExecutionResult, SandboxError
from sandbox.worker import PROOF_MESSAGE, encode_frame

log = logging.getLogger("sandbox")
_HEADER = struct.Struct(">I")
GRACE_S = 5.0  # the worker enforces the limit itself; the host waits this much longer at most
REEXEC_S = 30.0  # what a batch under another hash seed may take to start a fresh interpreter
MAX_CHUNK = 64  # items per sandbox run at most: a broken run re-runs no more than this
MAX_WORKERS = 64  # a pool's workers, temporary ones included (the local backend has 64 uids per pool)
MAX_CHUNK_BYTES = 8 * 1024 * 1024  # a sandbox run's frame, above which a chunk is split


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
        self.secret = ""  # set by _spawn: new for every worker started, given to it alone

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
        expected = hmac.new(self.secret.encode(), PROOF_MESSAGE, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(str(self.info.get("proof", "")), expected):
            self._destroy()
            raise SandboxError(f"{self.label}: the process that answered does not hold the worker's secret")

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

    def run_chunk(self, items: Sequence[ExecutionRequest], prelude: str, hash_seed: int | None,
                  put: Callable[[int, ExecutionResult], None], *, preload: Sequence[str] = (),
                  rerun: bool = False) -> None:
        """Run ``items`` as one sandbox run; ``put(index, result)`` for each, in order. When the
        worker breaks, it is replaced and every item without a result (the one it was running
        included) is run again alone; an item that breaks its worker alone too gets the verdict."""
        frame = encode_frame({"batch": {"prelude": prelude, "hash_seed": hash_seed, "preload": list(preload),
                                        "items": [item.to_wire() for item in items]}})
        started = time.monotonic()
        done = 0
        try:
            self._send(frame)
            allowance = REEXEC_S if hash_seed is not None or preload else 0.0  # a fresh interpreter first
            for index, item in enumerate(items):
                raw = self._recv(started + allowance + item.timeout_s + GRACE_S)
                put(index, ExecutionResult.from_wire(raw))
                done, started, allowance = index + 1, time.monotonic(), 0.0
        except (ChannelBroken, OSError, ValueError) as exc:
            if rerun:
                put(done, self._lost(exc, items[done], started))
                return
            log.warning("%s broke during a batch (%s): replacing it, running the rest alone", self.label, exc)
            self.replace()
            for index in range(done, len(items)):
                self.run_chunk([items[index]], prelude, hash_seed, lambda _, result, i=index: put(i, result),
                               preload=preload, rerun=True)

    def _lost(self, exc: Exception, request: ExecutionRequest, start: float) -> ExecutionResult:
        """The worker broke during ``request``, run alone: its result, after the worker is replaced."""
        stalled = time.monotonic() - start >= request.timeout_s
        status = self._death_status()
        if status == "killed" and stalled:
            status = "timeout"
        log.warning("%s misbehaved (%s): replacing it", self.label, exc)
        self.replace()
        return ExecutionResult(status, None, "", f"sandbox: worker lost ({exc})", time.monotonic() - start)

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
        self._spare = list(range(workers, MAX_WORKERS))  # indices for temporary workers (``parallel``)
        self._finalizer = weakref.finalize(self, Sandbox._close_handles, list(self.workers), backend)
        atexit.register(self._finalizer)
        log.info("sandbox backend: %s with %d warm worker(s)", self.name, workers)

    def _start_one(self, index: int) -> WorkerHandle:
        handle = self.backend.make_worker(index)
        handle.start()
        return handle

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        """One program, alone in a sandbox run."""
        return self.run_batches([Batch((request,))], chunk_size=1)[0][0]

    def run_batch(self, requests: Iterable[ExecutionRequest], *, prelude: str = "", hash_seed: int | None = None,
                  preload: Sequence[str] = ()) -> list[ExecutionResult]:
        """Every request as an item of one :class:`~sandbox.contract.Batch`; results in order."""
        return self.run_batches([Batch(tuple(requests), prelude, hash_seed, tuple(preload))])[0]

    def run_batches(self, batches: Sequence[Batch], *, chunk_size: int | None = None,
                    parallel: int | None = None) -> list[list[ExecutionResult]]:
        """Run every batch, one result list per batch, in order. Submitting batches together
        keeps the workers busy across them. Items go to sandbox runs in chunks small enough that
        every worker gets several (so that the last ones end together), at most ``chunk_size``
        each. ``parallel`` above the pool's size starts extra workers for this call, for items that
        mostly wait (ones expected to run into their time limit). Bad requests raise before anything
        runs."""
        validate = getattr(self.backend, "validate", None)
        for batch in batches:
            if not isinstance(batch, Batch):
                raise TypeError(f"expected a Batch, got {type(batch).__name__}")
            if validate is not None:
                for item in batch.items:
                    validate(item)
        if self._closed:
            raise SandboxError("sandbox is closed")
        total = sum(len(batch.items) for batch in batches)
        size = max(1, min(chunk_size or MAX_CHUNK, MAX_CHUNK, -(-total // (4 * len(self.workers)))))
        chunks = [(b, start, batch.items[start : start + size])
                  for b, batch in enumerate(batches) for start in range(0, len(batch.items), size)]
        chunks = [piece for chunk in chunks for piece in _split_by_bytes(*chunk)]
        results: list[list[ExecutionResult | None]] = [[None] * len(batch.items) for batch in batches]
        pending = iter(chunks)
        lock = threading.Lock()

        def drain() -> None:
            worker = self._free.get()
            try:
                while True:
                    with lock:
                        chunk = next(pending, None)
                    if chunk is None:
                        return
                    b, start, items = chunk

                    def put(index: int, result: ExecutionResult, b=b, start=start) -> None:
                        results[b][start + index] = result

                    worker.run_chunk(items, batches[b].prelude, batches[b].hash_seed, put, preload=batches[b].preload)
            finally:
                self._free.put(worker)

        wanted = min(max(parallel or 0, len(self.workers)), len(chunks), MAX_WORKERS)
        extra = self._start_extra(wanted - len(self.workers))
        try:
            n = min(len(self.workers) + len(extra), len(chunks))
            if n <= 1:
                if chunks:
                    drain()
            else:
                threads = [threading.Thread(target=drain, daemon=True) for _ in range(n)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
        finally:
            self._stop_extra(extra)
        missing = sum(r is None for batch in results for r in batch)
        if missing:
            raise SandboxError(f"{missing} item(s) got no result")
        return results  # type: ignore[return-value]

    def _start_extra(self, count: int) -> list[WorkerHandle]:
        """``count`` temporary workers, in the free queue until :meth:`_stop_extra`."""
        if count <= 0:
            return []
        with self._lock:
            indices, self._spare = self._spare[:count], self._spare[count:]
        with ThreadPoolExecutor(max_workers=min(len(indices), 8)) as ex:
            started = list(ex.map(self._start_one, indices))
        for handle in started:
            self._free.put(handle)
        return started

    def _stop_extra(self, extra: list[WorkerHandle]) -> None:
        """Close the temporary workers once they are back in the free queue."""
        waiting, kept = set(map(id, extra)), []
        while waiting:
            handle = self._free.get()
            if id(handle) in waiting:
                waiting.discard(id(handle))
                _quietly(handle.close)
                with self._lock:
                    self._spare.append(handle.index)
            else:
                kept.append(handle)
        for handle in kept:
            self._free.put(handle)

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

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quietly(fn) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - closing must go on for the others
        log.warning("sandbox cleanup: %s", exc)


def _split_by_bytes(batch_index: int, start: int, items: tuple) -> list[tuple[int, int, tuple]]:
    """A chunk cut so that no sandbox run's frame is much over MAX_CHUNK_BYTES."""
    pieces, first, size = [], 0, 0
    for offset, item in enumerate(items):
        weight = len(item.code) + len(item.stdin)
        if offset > first and size + weight > MAX_CHUNK_BYTES:
            pieces.append((batch_index, start + first, items[first:offset]))
            first, size = offset, 0
        size += weight
    pieces.append((batch_index, start + first, items[first:]))
    return pieces
