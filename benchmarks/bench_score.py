"""CRUXEval scoring speed: our sandboxed scorer against the official harness's way, in one run.

The baseline reproduces the official harness's execution path (facebookresearch/cruxeval,
evaluation/): a process pool over problems, and for every generation a ``multiprocessing.Manager``
plus a ``Process`` running ``exec(code + assert)`` under a 3 s ``setitimer``. It runs inside one
sandbox run (model generations are untrusted), on every problem by default (about a minute and a
half): a prefix of the problems would miss the few generations that loop until the limit, which
cost both ways most. Both verdict lists are compared on what the baseline scored.

Usage: python benchmarks/bench_score.py [--mode output] [--baseline-problems 0] [--quick]
The goal: ours at least 40x the official way (``speedup``) in both modes.
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import ExecutionRequest, open_sandbox  # noqa: E402
from stepcode_core.evaluation.cruxeval import (  # noqa: E402
    cheats,
    check_program,
    load_problems,
    score_generations,
)
from stepcode_core.data.reference import cruxeval_path, reference_file  # noqa: E402

# The official harness's per-generation path, run inside the sandbox. CHECKS is prepended.
_OFFICIAL_WAY = r'''
import json, multiprocessing, signal, contextlib, io
from concurrent.futures import ProcessPoolExecutor

class TimeoutException(Exception):
    pass

def unsafe_execute(program, result, timeout):
    def handler(signum, frame):
        raise TimeoutException()
    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(program, {})
        result.append("passed")
    except TimeoutException:
        result.append("timed out")
    except BaseException as e:
        result.append("failed")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)

def check_correctness(program, timeout=3):
    manager = multiprocessing.Manager()
    result = manager.list()
    p = multiprocessing.Process(target=unsafe_execute, args=(program, result, timeout))
    p.start()
    p.join(timeout=timeout + 1)
    if p.is_alive():
        p.kill()
    verdict = bool(result) and result[0] == "passed"
    manager.shutdown()
    return verdict

def score_problem(programs):
    return [False if program is None else check_correctness(program) for program in programs]

if __name__ == "__main__":
    with ProcessPoolExecutor(2) as pool:
        print(json.dumps(list(pool.map(score_problem, CHECKS))))
'''


GOAL_SPEEDUP = 40.0  # ours against the official way, both modes, all 800 problems

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("input", "output"), default="output")
    parser.add_argument("--baseline-problems", type=int, default=0,
                        help="problems the slow baseline scores (0: all; a prefix misses the few checks that "
                             "loop until the limit, which cost the official way most)")
    parser.add_argument("--data", type=Path, default=None, help="CRUXEval problems (default: the reference-data cache)")
    parser.add_argument("--generations", type=Path, default=None)
    parser.add_argument("--problems", type=int, default=0, help="score the first N problems only (0: all)")
    parser.add_argument("--quick", action="store_true", help="the first 20 problems both ways (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.problems = args.baseline_problems = 20
    generations_path = args.generations or reference_file(
        f"cruxeval/samples/codellama-7b_temp0.2_{args.mode}_generations.json")
    problems = load_problems(args.data or cruxeval_path())
    problems = problems[: args.problems] if args.problems else problems
    generations = json.loads(generations_path.read_text())
    total = sum(len(generations[p.id]) for p in problems)

    with open_sandbox(backend="local") as sandbox:
        started = time.perf_counter()
        scored = score_generations(generations, problems, args.mode, sandbox)
        ours_s = time.perf_counter() - started

        sample = problems[: args.baseline_problems] if args.baseline_problems else problems
        checks = [[None if cheats(args.mode, g, p) else check_program(p, g) for g in generations[p.id]] for p in sample]
        script = f"CHECKS = {checks!r}\n" + _OFFICIAL_WAY
        sampled = sum(len(c) for c in checks)
        print(f"ours: {total} generations in {ours_s:.1f} s; baseline on {sampled} generations ...", file=sys.stderr)
        started = time.perf_counter()
        result = sandbox.run(ExecutionRequest(code=script, timeout_s=3600, memory_mb=4096, output_limit_bytes=1 << 22))
        baseline_s = time.perf_counter() - started
    if result.status != "ok":
        print(f"baseline failed: {result.status}\n{result.stderr[-2000:]}", file=sys.stderr)
        return 1
    baseline_verdicts = json.loads(result.stdout.strip().splitlines()[-1])
    ours_verdicts = [scored["raw_scored_generations"][p.id] for p in sample]
    disagreements = sum(a != b for row_a, row_b in zip(ours_verdicts, baseline_verdicts) for a, b in zip(row_a, row_b))

    ours_rate = total / ours_s
    baseline_rate = sampled / baseline_s
    figures = {
        "quick": args.quick,
        "mode": args.mode,
        "generations": total,
        "ours_s": round(ours_s, 2),
        "ours_generations_per_s": round(ours_rate, 1),
        "baseline_generations": sampled,
        "baseline_s": round(baseline_s, 2),
        "baseline_generations_per_s": round(baseline_rate, 1),
        "baseline_extrapolated_s": round(total / baseline_rate, 1),
        "speedup": round(ours_rate / baseline_rate, 1),
        "goal_speedup": GOAL_SPEEDUP,
        "verdict_disagreements_on_sample": disagreements,
        "pass_at_1": scored["pass_at_1"],
        "pass_at_5": scored["pass_at_5"],
    }
    for key, value in figures.items():
        print(f"{key:32s} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
