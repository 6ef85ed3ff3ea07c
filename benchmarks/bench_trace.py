"""Tracing overhead: execution-trace anchors against ``sys.settrace`` on the CRUXEval programs.

For every program we time, in one interpreter, the plain call ``f(input)`` (P), the call of P' with
the anchor runtime the trace runner uses, and the call of P under a ``sys.settrace`` tracer that
records every line event with the ``repr`` of the frame's locals (how REval and snoop-style
pipelines collect states), plus a bare line-event tracer as a lower bound for settrace. Overhead is
traced time minus plain time; the claim is the ratio of the two overheads. The programs run inside
the sandbox (one long request), never in this process.

Usage: python benchmarks/bench_trace.py [--data cruxeval.jsonl] [--limit N] [--repeats R] [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import ExecutionRequest, open_sandbox  # noqa: E402
from stepcode_core.data.reference import cruxeval_path  # noqa: E402
from stepcode_core.tracing.anchors import instrument  # noqa: E402
from stepcode_core.tracing.runner import RUNTIME_SOURCE  # noqa: E402

# Runs inside the sandbox. PROGRAMS, REPEATS and RUNTIME_SOURCE are prepended.
_MEASURE = r'''
import sys, time, json, builtins

exec(RUNTIME_SOURCE)
# No record limit: every anchor does its full work (repr + record), the worst case.
__stepcode_anchor__, _records, _ = make_anchor(10 ** 9, None, [False])  # [False]: never quiet
builtins.__stepcode_anchor__ = __stepcode_anchor__

_events = []

def states_tracer(frame, event, arg):
    # REval-style: every line of the program, with the state of every local.
    if frame.f_code.co_filename != "<program>":
        return None
    if event == "line":
        _events.append((frame.f_lineno, {k: repr(v) for k, v in frame.f_locals.items()}))
    elif event == "return":
        _events.append((frame.f_lineno, repr(arg)))
    return states_tracer

def lines_tracer(frame, event, arg):
    if frame.f_code.co_filename != "<program>":
        return None
    if event == "line":
        _events.append(frame.f_lineno)
    return lines_tracer

def best_time(namespace, call, tracer):
    best = float("inf")
    for _ in range(REPEATS):
        _records.clear(); _events.clear()
        sys.settrace(tracer)
        start = time.perf_counter()
        eval(call, namespace)
        elapsed = time.perf_counter() - start
        sys.settrace(None)
        best = min(best, elapsed)
    return best

totals = {"plain": 0.0, "anchors": 0.0, "settrace_states": 0.0, "settrace_lines": 0.0}
measured = 0
for plain_source, anchored_source, call_source in PROGRAMS:
    try:
        call = compile(call_source, "<call>", "eval")
        plain_ns = {"__name__": "__main__"}
        exec(compile(plain_source, "<program>", "exec"), plain_ns)
        anchored_ns = {"__name__": "__main__"}
        exec(compile(anchored_source, "<program>", "exec"), anchored_ns)
        eval(call, plain_ns); eval(call, anchored_ns)  # warm up; skip programs that raise
    except Exception:
        continue
    times = {
        "plain": best_time(plain_ns, call, None),
        "anchors": best_time(anchored_ns, call, None),
        "settrace_states": best_time(plain_ns, call, states_tracer),
        "settrace_lines": best_time(plain_ns, call, lines_tracer),
    }
    for key, value in times.items():
        totals[key] += value
    measured += 1
print(json.dumps({"measured": measured, **totals}))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="CRUXEval problems (default: the reference-data cache)")
    parser.add_argument("--limit", type=int, default=None, help="first N programs only")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls a variant; the best counts")
    parser.add_argument("--quick", action="store_true", help="40 programs, 3 repeats (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.repeats = 40, 3
    try:
        args.data = args.data or cruxeval_path()
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.data.is_file():
        print(f"no CRUXEval file at {args.data}", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in args.data.open(encoding="utf-8") if line.strip()][: args.limit]

    started = time.perf_counter()
    programs = [instrument(row["code"]) for row in rows]
    instrument_s = time.perf_counter() - started
    payload = [(row["code"], program.harness, f"f({row['input']})") for row, program in zip(rows, programs)]
    script = (
        f"PROGRAMS = {payload!r}\nREPEATS = {args.repeats}\nRUNTIME_SOURCE = {RUNTIME_SOURCE!r}\n" + _MEASURE
    )
    print(f"timing {len(rows)} programs x 4 variants x {args.repeats} calls in the local sandbox ...", file=sys.stderr)
    with open_sandbox(backend="local", workers=1) as sandbox:
        result = sandbox.run(ExecutionRequest(code=script, timeout_s=900, memory_mb=4096, output_limit_bytes=1 << 16))
    if result.status != "ok":
        print(f"measurement failed: {result.status}\n{result.stderr[-2000:]}", file=sys.stderr)
        return 1
    totals = json.loads(result.stdout.strip().splitlines()[-1])

    plain = totals["plain"]
    anchor_overhead = totals["anchors"] - plain
    states_overhead = totals["settrace_states"] - plain
    lines_overhead = totals["settrace_lines"] - plain
    figures = {
        "quick": args.quick,
        "programs": len(rows),
        "measured": totals["measured"],
        "repeats": args.repeats,
        "plain_s": round(plain, 6),
        "anchors_s": round(totals["anchors"], 6),
        "settrace_states_s": round(totals["settrace_states"], 6),
        "settrace_lines_s": round(totals["settrace_lines"], 6),
        "anchors_vs_plain": round(totals["anchors"] / plain, 3),
        "settrace_states_vs_plain": round(totals["settrace_states"] / plain, 3),
        "settrace_lines_vs_plain": round(totals["settrace_lines"] / plain, 3),
        "anchor_overhead_s": round(anchor_overhead, 6),
        "settrace_overhead_s": round(states_overhead, 6),
        # The claim: how many times smaller the anchors' overhead is than REval-style settrace's.
        "overhead_ratio_settrace_vs_anchors": round(states_overhead / anchor_overhead, 2),
        "overhead_ratio_bare_settrace_vs_anchors": round(lines_overhead / anchor_overhead, 2),
        "mean_static_anchor_sites": round(statistics.mean(len(p.sites) for p in programs), 3),
        "instrument_ms_per_program": round(1000 * instrument_s / len(rows), 3),
    }
    for key, value in figures.items():
        print(f"{key:42s} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
