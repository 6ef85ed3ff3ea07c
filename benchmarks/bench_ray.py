"""Tracing on Ray: the same programs traced by 1 and by 2 Ray workers on a local cluster (the ratio is
measured against 1 worker in the same run), then on a simulated two-node cluster
(``ray.cluster_utils.Cluster``, one CPU a node) to show that shards are placed on both nodes.

Programs are the pipeline's own: ``raw_programs`` → ``instrumented_programs`` materialized once (not
timed); each configuration then traces every shard through :class:`stepcode_core.data.ray_shards.RayShards`,
cross-check on (each program run twice, in two interpreters), the sandbox's local backend. ``trace_s``
is from the first shard submitted to the last returned; ``start_s`` is the cluster and its workers
starting (once a run, whatever its size). ``programs_per_core_s`` turns the 2-worker rate into
the figure a capacity plan needs.

Usage: python benchmarks/bench_ray.py [--programs 10000] [--shards 16] [--quick]
The goal: 2 workers ≥ 1.7x as fast as 1 on a 2-core machine (``goal_speedup``).
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dagster as dg  # noqa: E402
import ray  # noqa: E402

from pipelines.assets import data  # noqa: E402
from pipelines.storage import ArtifactStore  # noqa: E402
from stepcode_core.data.ray_shards import RayShards  # noqa: E402
from stepcode_core.data.shards import ShardLimits, ShardTask, split_into_shards  # noqa: E402

GOAL_SPEEDUP = 1.7
OBJECT_STORE_BYTES = 128 * 2**20  # shards and traces pass through it one at a time
SANDBOX = {"backend": "local"}


def instrumented(programs: int, root: Path):
    """The instrumented_programs table of ``programs`` generated programs (the pipeline's own assets)."""
    result = dg.materialize([data.raw_programs, data.instrumented_programs],
                            resources={"store": ArtifactStore(root=str(root))},
                            run_config={"ops": {"raw_programs": {"config": {"generator_count": programs,
                                                                             "generator_seed": 0}}}})
    assert result.success
    return result.output_for_node("instrumented_programs").read_table()


def trace(tasks: list[ShardTask], workers: int) -> dict:
    """Trace every task with ``workers`` Ray workers on the cluster ``ray.init`` connected to."""
    started = time.perf_counter()
    outcomes = []
    first_submit = None

    def workers_ready(message: str) -> None:  # RayShards logs once its workers are up, before the first shard
        nonlocal first_submit
        first_submit = first_submit or time.perf_counter()

    RayShards(SANDBOX, workers=workers, log=workers_ready).run(tasks, outcomes.append)
    ended = time.perf_counter()
    programs = sum(o.executed for o in outcomes)
    trace_s = ended - (first_submit or started)
    return {"workers": workers, "programs": programs, "trace_s": round(trace_s, 2),
            "start_s": round((first_submit or started) - started, 2),
            "programs_per_s": round(programs / trace_s, 1),
            "shards_per_node": dict(Counter(o.node[:12] for o in outcomes)),
            "statuses": dict(Counter(s for o in outcomes for s in o.table.column("status").to_pylist()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--two-node-programs", type=int, default=2000, help="programs traced on the two-node cluster")
    parser.add_argument("--quick", action="store_true", help="200 programs, 4 shards (seconds: checks the script runs)")
    args = parser.parse_args()
    if args.quick:
        args.programs, args.shards, args.two_node_programs = 200, 4, 100

    with tempfile.TemporaryDirectory() as folder:
        table = instrumented(args.programs, Path(folder))
    limits = ShardLimits()
    tasks = [ShardTask(i, shard, limits) for i, shard in enumerate(split_into_shards(table, args.shards))]

    runs = []
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False)
    try:
        for workers in (1, 2):
            runs.append(trace(tasks, workers))
            print(f"{workers} Ray worker(s): {runs[-1]['programs']} programs in {runs[-1]['trace_s']} s "
                  f"({runs[-1]['programs_per_s']} programs/s; workers started in {runs[-1]['start_s']} s)", flush=True)
    finally:
        ray.shutdown()

    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": OBJECT_STORE_BYTES})
    cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        nodes = sorted(node["NodeID"][:12] for node in ray.nodes() if node["Alive"])
        two_node_table = table.slice(0, args.two_node_programs)
        two_node_tasks = [ShardTask(i, shard, limits) for i, shard in enumerate(split_into_shards(two_node_table, 8))]
        two_nodes = trace(two_node_tasks, workers=2)
        print(f"two-node cluster {nodes}: shards per node {two_nodes['shards_per_node']}", flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()

    one, two = runs
    speedup = one["trace_s"] / two["trace_s"]
    figures = {
        "quick": args.quick,
        "machine_cpus": os.cpu_count(),
        "programs": args.programs,
        "shards": args.shards,
        "cross_check": limits.cross_check,
        "one_worker_s": one["trace_s"],
        "two_workers_s": two["trace_s"],
        "speedup_2_vs_1": round(speedup, 2),
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": speedup >= GOAL_SPEEDUP,
        "workers_start_s": two["start_s"],
        "programs_per_core_s": round(two["programs_per_s"] / 2, 1),
        "statuses_same": one["statuses"] == two["statuses"],
        "two_node_nodes": len(nodes),
        "two_node_shards_per_node": two_nodes["shards_per_node"],
        "two_node_both_used": len(two_nodes["shards_per_node"]) == 2,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
