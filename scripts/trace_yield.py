"""How many real programs nobody here wrote survive the data stage, and why the others do not.

Runs the data stage's own steps (instrument, trace in the sandbox twice in two interpreters, filter)
on HumanEval's 164 reference solutions with up to three inputs each from their tests (the
``humaneval`` source), and on REval's 154 programs with their first input (HumanEval and ClassEval;
a ClassEval test snippet becomes a function ``test()`` run on an instance of its test class, as
REval's harness runs it as a method). The contamination filter is off: REval's programs are an
evaluation set. Prints one table row per source, then one JSON line.

    .venv/bin/python scripts/trace_yield.py [--reval-dir DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import textwrap
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import open_sandbox  # noqa: E402
from stepcode_core.data.dataset import FilterConfig, build_trace_dataset, trace_job, trace_record  # noqa: E402
from stepcode_core.data.sources import RawProgram, from_humaneval  # noqa: E402
from stepcode_core.tracing.anchors import InstrumentationError, instrument  # noqa: E402
from stepcode_core.tracing.runner import run_traces  # noqa: E402


def reval_programs(data_dir: Path) -> list[RawProgram]:
    programs = []
    for line in (data_dir / "DREval_data.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        first = row["inputs"][0]
        if row.get("test"):
            programs.append(RawProgram(row["task_id"], "reval", classeval_script(row["code"], row["test"], first), "",
                                       entry_point="test", provenance={"task_id": row["task_id"]}))
        else:  # HumanEval: the input is the call's argument tuple, "(a, b,)"
            programs.append(RawProgram(row["task_id"], "reval", row["code"], first.strip()[1:-1],
                                       entry_point=row["entry_point"], provenance={"task_id": row["task_id"]}))
    return programs


def classeval_script(code: str, test: str, snippet: str) -> str:
    """The class, the ``setUp`` of the test class that serves the snippet (the one with a method
    holding its first line, else the first with a ``setUp``), and ``test()``: the snippet on an
    instance of it, ``assertX`` and ``self.`` made calls on ``case`` (REval's harness runs it as a
    method of that class)."""
    lines = snippet.rstrip("\n").split("\n")
    classes = [node for node in ast.parse(test).body if isinstance(node, ast.ClassDef)]
    first = lines[0].strip().replace("assert", "self.assert")
    chosen = next((c for c in classes if first in ast.get_source_segment(test, c)), None)
    chosen = chosen or next((c for c in classes if any(getattr(f, "name", "") == "setUp" for f in c.body)), None)
    header = "import unittest\n\n\n"
    set_up = next((f for f in chosen.body if getattr(f, "name", "") == "setUp"), None) if chosen else None
    if set_up is not None:  # the class with its setUp alone: the test methods are not the program's
        method = textwrap.indent(textwrap.dedent(ast.get_source_segment(test, set_up, padded=True)), "    ")
        header += f"class {chosen.name}(unittest.TestCase):\n{method}\n\n\n"
        setup = f"    case = {chosen.name}()\n    case.setUp()\n"
    else:
        setup = "    case = unittest.TestCase()\n"
    body = "".join(f"    {text.replace('assert', 'case.assert').replace('self.', 'case.')}\n" for text in lines)
    return code.rstrip("\n") + "\n\n\n" + header + "def test():\n" + setup + body


def measure(programs: list[RawProgram], sandbox) -> dict:
    rows, jobs, failed = [], [], Counter()
    for program in programs:
        row = program.to_row()
        try:
            instrumented = instrument(row["code"])
        except InstrumentationError:
            failed["instrument_error"] += 1
            continue
        row.update(instrumented_code=instrumented.code, policy="paper")
        rows.append(row)
        jobs.append(trace_job(row, instrumented))
    runs = run_traces(jobs, sandbox, timeout_s=10.0, cross_check=True)
    traces = [trace_record(row, run) for row, run in zip(rows, runs)]
    build = build_trace_dataset(traces, FilterConfig(prompt_style="compact"), None)
    drops = Counter(build.drops) + failed
    return {"programs": len(programs), "traced": sum(run.status == "ok" for run in runs),
            "kept": len(build.programs), "drops": dict(sorted(drops.items(), key=lambda kv: -kv[1]))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reval-dir", type=Path, default=None,
                        help="folder with DREval_data.jsonl (default: the reference-data cache's reval/)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    if args.reval_dir is None:
        from stepcode_core.data.reference import reval_dir

        args.reval_dir = reval_dir()
    sources = {"humaneval": from_humaneval(), "reval": reval_programs(args.reval_dir)}
    results = {}
    with open_sandbox("auto", workers=args.workers) as sandbox:
        for name, programs in sources.items():
            results[name] = measure(programs, sandbox)
            r = results[name]
            print(f"{name}: {r['programs']} programs in, {r['traced']} traced without error, {r['kept']} kept; "
                  f"drops {r['drops']}", flush=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
