"""Tracing in shards: what one shard of ``execution_traces`` is, how it is traced, and the runner that
traces a run's shards on this machine. :mod:`stepcode_core.data.ray_shards` is the runner that traces
them on a Ray cluster; both call :func:`trace_shard`, so a shard's rows are the same wherever it ran.

A shard is the programs whose id hashes to its index (:func:`~stepcode_core.data.dataset.shard_of`):
stable across runs and machines, so a shard's cache key depends on its programs and limits only.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import pyarrow as pa

from stepcode_core.data import schemas
from stepcode_core.data.dataset import shard_of, trace_job, trace_record
from stepcode_core.tracing.anchors import DEFAULT_SETTINGS, AnchorSite, InstrumentedProgram
from stepcode_core.tracing.runner import run_traces


@dataclass(frozen=True)
class ShardLimits:
    """How every program of a shard runs (part of the shard's cache key)."""

    timeout_s: float = 3.0
    memory_mb: int = 512
    # A second run under another hash seed in a fresh interpreter; off: twice in one interpreter.
    cross_check: bool = True
    check_original: bool = True  # run P beside P' and record whether the anchors changed its behaviour

    def to_dict(self) -> dict:
        return {"timeout_s": self.timeout_s, "memory_mb": self.memory_mb, "cross_check": self.cross_check,
                "check_original": self.check_original}


@dataclass(frozen=True)
class ShardTask:
    """One shard to trace: its index and its rows of ``instrumented_programs`` (Arrow: compact in the
    driver's memory and in Ray's object store; rows become dicts only where they are traced)."""

    index: int
    table: pa.Table
    limits: ShardLimits


@dataclass(frozen=True)
class ShardOutcome:
    """A traced shard: its rows of ``execution_traces`` and where and how long it ran."""

    index: int
    table: pa.Table
    executed: int  # programs run (those that could not be instrumented are recorded, not run)
    seconds: float
    node: str  # the host (or Ray node) that traced it
    backend: str = ""  # the sandbox backend it ran in (local | docker)
    attempts: int = 1  # > 1: a worker died under it and it was traced again from the start


def split_into_shards(table: pa.Table, num_shards: int) -> list[pa.Table]:
    """``instrumented_programs`` split into ``num_shards`` tables, each program in the shard of its id
    (one pass over the ids, whatever the number of shards)."""
    members: list[list[int]] = [[] for _ in range(num_shards)]
    for row, program_id in enumerate(table.column("program_id").to_pylist()):
        members[shard_of(program_id, num_shards)].append(row)
    return [table.take(pa.array(rows, type=pa.int64())) for rows in members]  # typed: a shard may be empty


KEYED_COLUMNS = ("program_id", "harness_code", "entry_point", "input", "output", "policy")


def rows_hash(table: pa.Table) -> str:
    """What a shard's traces depend on, of its rows: the programs as they run and what they are checked against."""
    digest = hashlib.sha256()
    for values in zip(*(table.column(name).to_pylist() for name in KEYED_COLUMNS)):
        digest.update(json.dumps(list(values)).encode())
    return digest.hexdigest()[:20]


def program_of(row: dict) -> InstrumentedProgram:
    """The InstrumentedProgram the runner needs, from a stored row (no re-instrumenting)."""
    settings = DEFAULT_SETTINGS[row["policy"]]
    sites = tuple(
        AnchorSite(i, s["name"], s["line"], s["instrumented_line"], s["in_loop"]) for i, s in enumerate(row["anchor_sites"])
    )
    return InstrumentedProgram(
        original=row["code"], code=row["instrumented_code"], harness=row["harness_code"], policy=row["policy"],
        sites=sites, max_anchor_lines=settings.max_anchor_lines, hit_cap=settings.hit_cap, line_map={},
    )


def not_run_record(row: dict) -> dict:
    """A program that could not be instrumented is recorded, not executed."""
    return {
        "program_id": row["program_id"], "source": row["source"], "level": row.get("level"),
        "entry_point": row["entry_point"], "code": row["code"], "instrumented_code": None, "policy": row["policy"], "input": row["input"],
        "expected_output": row["output"],
        "status": "not_run", "result": None, "error": row["instrument_error"], "matches_expected": None,
        "steps": [], "anchor_lines": 0, "over_cap": False, "complete": False, "deterministic": False,
        "unstable_repr": False, "nondeterminism": None, "same_as_original": None, "original_difference": None,
        "program_stdout": "", "duration_s": 0.0,
    }


def trace_shard(task: ShardTask, sandbox, node: str = "") -> ShardOutcome:
    """Run every instrumented program of ``task`` in ``sandbox`` (each twice: with ``cross_check``
    in two interpreters under two hash seeds, without it twice in one) and return its
    ``execution_traces`` rows in the shard's order."""
    started = time.perf_counter()
    limits = task.limits
    rows = task.table.to_pylist()
    runnable = [row for row in rows if row["instrumented_code"] is not None]
    jobs = [trace_job(row, program_of(row), repeats=1 if limits.cross_check else 2, check_original=limits.check_original)
            for row in runnable]
    runs = run_traces(jobs, sandbox, timeout_s=limits.timeout_s, memory_mb=limits.memory_mb,
                      cross_check=limits.cross_check) if jobs else []
    by_id = {row["program_id"]: trace_record(row, run) for row, run in zip(runnable, runs)}
    records = [by_id.get(row["program_id"]) or not_run_record(row) for row in rows]
    table = pa.Table.from_pylist(records, schema=schemas.EXECUTION_TRACES)
    return ShardOutcome(task.index, table, len(jobs), time.perf_counter() - started, node or socket.gethostname(),
                        sandbox.name)


ShardDone = Callable[[ShardOutcome], None]


class LocalShards:
    """Traces shards on this machine through one warm sandbox pool (its workers are the parallelism).

    ``in_flight`` shards run at once over that pool, so that while one shard's traces are parsed
    (Python, one core) the other's programs keep the pool's workers busy."""

    name = "local"

    def __init__(self, sandbox, in_flight: int = 2):
        if in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight}")
        self.sandbox = sandbox
        self.in_flight = in_flight

    def run(self, tasks: Sequence[ShardTask], on_done: ShardDone) -> None:
        """Trace every task, calling ``on_done`` in this thread as each one finishes (in any order)."""
        node = socket.gethostname()
        pending = list(tasks)
        running: set = set()
        pool = ThreadPoolExecutor(self.in_flight, thread_name_prefix="shard")
        try:
            while pending or running:
                while pending and len(running) < self.in_flight:
                    running.add(pool.submit(trace_shard, pending.pop(0), self.sandbox, node))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    on_done(future.result())
        finally:
            # On an error or a cancel nothing new starts; a shard already running ends with its pool.
            pool.shutdown(wait=not running, cancel_futures=True)
