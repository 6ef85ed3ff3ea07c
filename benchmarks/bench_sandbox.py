"""Sandbox throughput on the 800 CRUXEval programs, against what a user would otherwise write.

Baselines, measured in the same run, are what a user would otherwise write: one ``subprocess.run([sys.executable, path])`` per
program, and one ``docker run --rm`` per program (a sample: it is slow). Backends: the local
backend and the Docker warm pool, ``workers`` each. Every run is checked against CRUXEval's expected
output, so the speed is of real work. Each measurement is repeated in ``--rounds`` interleaved rounds
and the best round counts (as timeit does), so a burst of other load on the machine skews neither
side. The last line of output is one JSON object.

    python benchmarks/bench_sandbox.py [--data PATH] [--workers N] [--rounds 3] [--process-sample N] [--docker-sample N]
        [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sandbox import ExecutionRequest, open_sandbox  # noqa: E402
from stepcode_core.data.reference import cruxeval_path  # noqa: E402
from sandbox.docker_backend import (  # noqa: E402
    docker_client,
    docker_unavailable_reason,
    ensure_image,
)


def load_programs(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["code"] + "\nprint(repr(f(" + r["input"] + ")))\n", r["output"]) for r in rows]


def rss_mb(pid: int) -> float:
    """Peak resident memory of a process and its descendants (VmHWM), MiB."""
    total = 0.0
    try:
        with open(f"/proc/{pid}/status") as fh:
            total += int(fh.read().split("VmHWM:")[1].split()[0]) / 1024
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                total += sum(rss_mb(int(child)) for child in fh.read().split())
    except (OSError, IndexError):
        pass
    return total


def bench_pool(backend: str, programs, workers: int, options: dict) -> dict:
    reqs = [ExecutionRequest(code=code, timeout_s=10.0) for code, _ in programs]
    key = "docker_options" if backend == "docker" else "local_options"
    started = time.perf_counter()
    with open_sandbox(backend, workers=workers, **{key: options}) as sb:
        start_s = time.perf_counter() - started
        sb.run_batch(reqs[:50])  # warm-up
        t0 = time.perf_counter()
        results = sb.run_batch(reqs)
        elapsed = time.perf_counter() - t0
        if backend == "local":
            peak = sum(rss_mb(w.proc.pid) for w in sb.workers)
        else:
            peak = 0.0
            for w in sb.workers:
                stats = w.container.stats(stream=False)["memory_stats"]
                peak += stats.get("max_usage", stats.get("usage", 0)) / 2**20
    correct = sum(r.status == "ok" and r.stdout.strip() == want for r, (_, want) in zip(results, programs))
    return {"runs_per_s": len(reqs) / elapsed, "seconds": elapsed, "correct": correct, "start_s": start_s,
            "pool_peak_mb": peak}


def bench_process_per_run(programs) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (code, _) in enumerate(programs):
            path = Path(tmp) / f"p{i}.py"
            path.write_text(code)
            paths.append(path)
        t0 = time.perf_counter()
        outs = [subprocess.run([sys.executable, str(p)], capture_output=True, text=True, timeout=30) for p in paths]
        elapsed = time.perf_counter() - t0
    correct = sum(o.stdout.strip() == want for o, (_, want) in zip(outs, programs))
    return {"runs_per_s": len(programs) / elapsed, "seconds": elapsed, "correct": correct}


def bench_docker_run(programs, image: str) -> dict:
    cmd = ["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "/usr/local/bin/sandbox-python",
           image, "-"]
    t0 = time.perf_counter()
    outs = [subprocess.run(cmd, input=code, capture_output=True, text=True, timeout=120) for code, _ in programs]
    elapsed = time.perf_counter() - t0
    correct = sum(o.stdout.strip() == want for o, (_, want) in zip(outs, programs))
    return {"runs_per_s": len(programs) / elapsed, "seconds": elapsed, "correct": correct}


def best(rounds: list[dict]) -> dict:
    return max(rounds, key=lambda r: r["runs_per_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="CRUXEval problems (default: the reference-data cache)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--process-sample", type=int, default=60, help="programs for the subprocess baseline")
    parser.add_argument("--docker-sample", type=int, default=6, help="programs for the docker-run baseline")
    parser.add_argument("--skip-docker", action="store_true")
    parser.add_argument("--quick", action="store_true", help="the first 60 programs, one round, small baseline samples (seconds: checks the script runs, not the figures)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.process_sample, args.docker_sample = 1, 5, 1

    programs = load_programs(args.data or cruxeval_path())
    if args.quick:
        programs = programs[:60]
    sample = random.Random(0).sample(programs, k=min(len(programs), args.process_sample))
    out: dict = {"quick": args.quick, "programs": len(programs), "workers": args.workers, "cpus": os.cpu_count(), "rounds": args.rounds}
    reason = "skipped (--skip-docker)" if args.skip_docker else docker_unavailable_reason()
    image = None
    if reason is None:
        client = docker_client()
        image = ensure_image(client)
        client.close()
    dsample = random.Random(1).sample(programs, k=min(len(programs), args.docker_sample))

    runs: dict[str, list[dict]] = {"process": [], "local": [], "docker_run": [], "docker": []}
    for i in range(args.rounds):
        runs["process"].append(bench_process_per_run(sample))
        runs["local"].append(bench_pool("local", programs, args.workers, {}))
        line = f"round {i + 1}: process-per-run {runs['process'][-1]['runs_per_s']:.1f}/s, " \
               f"local {runs['local'][-1]['runs_per_s']:.1f}/s"
        if image is not None:
            runs["docker_run"].append(bench_docker_run(dsample, image))
            runs["docker"].append(bench_pool("docker", programs, args.workers, {"image": image}))
            line += f", docker-run {runs['docker_run'][-1]['runs_per_s']:.2f}/s, " \
                    f"docker pool {runs['docker'][-1]['runs_per_s']:.1f}/s"
        print(line, flush=True)

    process, local = best(runs["process"]), best(runs["local"])
    out.update({
        "process_per_run_runs_per_s": round(process["runs_per_s"], 2),
        "local_runs_per_s": round(local["runs_per_s"], 1),
        "local_vs_process_per_run": round(local["runs_per_s"] / process["runs_per_s"], 1),
        "local_correct": min(r["correct"] for r in runs["local"]),
        "local_pool_peak_mb": round(max(r["pool_peak_mb"] for r in runs["local"]), 1),
    })
    if image is not None:
        docker_run, pool = best(runs["docker_run"]), best(runs["docker"])
        out.update({
            "docker_run_runs_per_s": round(docker_run["runs_per_s"], 3),
            "docker_runs_per_s": round(pool["runs_per_s"], 1),
            "docker_vs_docker_run": round(pool["runs_per_s"] / docker_run["runs_per_s"], 1),
            "docker_correct": min(r["correct"] for r in runs["docker"]),
            "docker_pool_peak_mb": round(max(r["pool_peak_mb"] for r in runs["docker"]), 1),
            "docker_pool_start_s": round(min(r["start_s"] for r in runs["docker"]), 2),
        })
    else:
        out.update({"docker_runs_per_s": None, "docker_vs_docker_run": None, "docker_skipped": reason})
    out["peak_rss_mb_host"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
