"""Tracing shards on a Ray cluster: :class:`ShardWorker` actors, each holding a warm sandbox pool,
trace whole shards; the driver (:class:`RayShards`) hands each finished shard to its caller.

Ray runs the workers, places them on the cluster's nodes and ships shards and traces through its object
store. Written here, because no Ray primitive does it (``ray.util.ActorPool`` dispatches, but neither
replaces a dead actor nor says which item it held), is the driver loop: give each free worker the next
shard; hand each finished shard to the caller as it arrives (the caller stores it, so a crash loses only
the shards in flight); when a worker dies under a shard (killed, out of memory, its node lost), start a
fresh worker and trace that shard again from the start, at most ``max_attempts`` times; on an error or
a cancel, kill every worker and remove the sandbox containers a killed worker leaves on this host.

Connecting to Ray (``ray.init``) is the caller's: in the pipeline, dagster-ray's resources do it.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from sandbox import open_sandbox, remove_orphaned_workers
from stepcode_core.data.shards import ShardDone, ShardOutcome, ShardTask, trace_shard


class ShardFailed(RuntimeError):
    """A shard whose worker died ``max_attempts`` times: the shard, not the cluster, is the likely cause."""


class ShardWorker:
    """A Ray actor (``ray.remote(ShardWorker)``): opens a sandbox pool once and traces shard after shard.

    ``sandbox_options`` are :func:`sandbox.open_sandbox` keywords; ``workers`` there is the pool's
    size, which should match the CPUs Ray gives the actor."""

    def __init__(self, sandbox_options: dict):
        import ray

        remove_orphaned_workers()  # the containers of a worker killed earlier on this node
        self.node = ray.get_runtime_context().get_node_id()
        self.sandbox = open_sandbox(**sandbox_options)

    def describe(self) -> dict:
        return {"node": self.node, "host": socket.gethostname(), "pid": os.getpid(), "backend": self.sandbox.name,
                "sandbox_workers": len(self.sandbox.workers)}

    def trace(self, task: ShardTask) -> ShardOutcome:
        return trace_shard(task, self.sandbox, node=self.node)

    def close(self) -> None:
        self.sandbox.close()


class RayShards:
    """Traces shards on the Ray cluster this process is connected to (``ray.init`` first).

    ``workers``: actors to start (0: one per ``cpus_per_worker`` CPUs of the cluster, at most one per
    shard); each reserves ``cpus_per_worker`` CPUs and runs that many sandbox workers."""

    name = "ray"

    def __init__(self, sandbox_options: dict, *, workers: int = 0, cpus_per_worker: int = 1, max_attempts: int = 3,
                 log: Callable[[str], None] | None = None):
        if cpus_per_worker < 1 or max_attempts < 1 or workers < 0:
            raise ValueError("cpus_per_worker and max_attempts must be >= 1, workers >= 0")
        self.sandbox_options = {**sandbox_options, "workers": cpus_per_worker}
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.max_attempts = max_attempts
        self.log = log or (lambda message: None)
        self.described: list[dict] = []  # what each started worker said of itself (node, pid, backend)

    def worker_count(self, shards: int) -> int:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 1))
        return max(1, min(self.workers or cpus // self.cpus_per_worker or 1, shards))

    def run(self, tasks: Sequence[ShardTask], on_done: ShardDone) -> None:
        """Trace every task, calling ``on_done`` in this thread as each one finishes (in any order)."""
        import ray
        from ray.exceptions import RayActorError

        if not tasks:
            return
        actor_class = ray.remote(num_cpus=self.cpus_per_worker, max_restarts=0)(ShardWorker)
        queue = deque(tasks)
        attempts: Counter = Counter()
        actors: list = []
        in_flight: dict = {}  # object ref -> (actor, task)

        def start_worker():
            actor = actor_class.remote(self.sandbox_options)
            actors.append(actor)
            return actor

        succeeded = False
        try:
            idle = [start_worker() for _ in range(self.worker_count(len(tasks)))]
            self.described += ray.get([actor.describe.remote() for actor in idle])  # raises if a sandbox cannot open
            self.log(f"{len(idle)} Ray workers on {len({d['node'] for d in self.described})} node(s), "
                     f"{self.cpus_per_worker} sandbox worker(s) each ({self.described[0]['backend']} backend)")
            while queue or in_flight:
                while queue and idle:
                    actor, task = idle.pop(), queue.popleft()
                    attempts[task.index] += 1
                    in_flight[actor.trace.remote(task)] = (actor, task)
                done, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)  # a timeout: signals get a turn
                for ref in done:
                    actor, task = in_flight.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except RayActorError as exc:
                        if attempts[task.index] >= self.max_attempts:
                            raise ShardFailed(f"shard {task.index}: its Ray worker died {attempts[task.index]} times "
                                              f"({type(exc).__name__})") from exc
                        self.log(f"shard {task.index}: its Ray worker died ({type(exc).__name__}); "
                                 "a new worker traces it again")
                        _kill(ray, actor)
                        actors.remove(actor)
                        replacement = start_worker()
                        self.described.append(ray.get(replacement.describe.remote()))
                        idle.append(replacement)
                        queue.appendleft(task)
                        continue
                    idle.append(actor)
                    on_done(replace(outcome, attempts=attempts[task.index]))
            succeeded = True
        finally:
            self._stop(ray, actors, gracefully=succeeded)

    def _stop(self, ray, actors: list, gracefully: bool) -> None:
        """Close the workers' sandboxes (after a success), then end the workers; after an error or a
        cancel they are killed at once, and the containers their Docker sandboxes leave are removed."""
        if gracefully and actors:
            try:
                ray.get([actor.close.remote() for actor in actors], timeout=60)
            except Exception:  # noqa: BLE001 - a worker that cannot close is killed below
                pass
        for actor in actors:
            _kill(ray, actor)
        if not gracefully:
            here = socket.gethostname()
            pids = [d["pid"] for d in self.described if d["host"] == here]
            deadline = time.monotonic() + 10  # a killed worker's process takes a moment to go
            while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            remove_orphaned_workers()


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
