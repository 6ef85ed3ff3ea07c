"""``stepcode score cruxeval|livecodebench|reval``: score a benchmark's generations the way its own
harness does."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from sandbox import open_sandbox
from stepcode_core.evaluation import livecodebench
from stepcode_core.evaluation.cruxeval import (
    check_generations,
    load_problems,
    score_generations,
)
from stepcode_core.evaluation.reval import (
    KINDS,
    check_rows,
    load_reval,
    score_predictions,
)
from stepcode_core.data.reference import cruxeval_path
from stepcode_core.paths import read_jsonl, write_atomically


def add_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser("score", help="score benchmark generations the official way")
    benchmarks = score.add_subparsers(dest="benchmark", required=True)
    crux = benchmarks.add_parser(
        "cruxeval",
        help="score CRUXEval generations ({\"sample_i\": [str, ...]})",
        description="Score a CRUXEval generations file exactly as the official harness does; write the "
        "official scored format and print pass@1 and pass@5 as one JSON object on the last line.",
    )
    crux.add_argument("generations", metavar="GENERATIONS.json")
    crux.add_argument("--mode", choices=("input", "output"), required=True)
    crux.add_argument("--data", metavar="CRUXEVAL.jsonl", help="default: the reference-data cache (stepcode data fetch)")
    crux.add_argument("--out", metavar="SCORED.json", help="where the scored file goes")
    crux.add_argument("--backend", choices=("auto", "local", "docker"), default="auto")
    crux.set_defaults(func=_score_cruxeval, name="score cruxeval")

    lcb = benchmarks.add_parser(
        "livecodebench", help="score LiveCodeBench code-execution generations as LCB's harness does",
        description="GENERATIONS.json: LiveCodeBench's saved code-execution output (its list of per-sample records "
                    "with id and pred_list, or output_list read with LCB's extraction), {id: [generation, ...]}, or "
                    "LCB's list of lists in its sample order. Keys are the sample's id (sample_N): a question has "
                    "several samples. ROWS: LCB's execution rows (JSONL or Parquet). A generation that contains the "
                    "input is skipped, as LCB skips it. Prints pass_at_1 (the mean over samples, LCB's number) as one "
                    "JSON object on the last line and writes the scored file with --out.")
    lcb.add_argument("generations", metavar="GENERATIONS.json")
    lcb.add_argument("--data", metavar="ROWS.jsonl", required=True, help="LiveCodeBench execution rows")
    lcb.add_argument("--cot", action="store_true",
                     help="read output_list as chain-of-thought responses (LCB's --cot_code_execution)")
    lcb.add_argument("--out", metavar="SCORED.json", help="where the scored file goes")
    lcb.add_argument("--backend", choices=("auto", "local", "docker"), default="auto")
    lcb.set_defaults(func=_score_livecodebench, name="score livecodebench")

    reval_parser = benchmarks.add_parser(
        "reval", help="score REval predictions (coverage, state, path, output) and Incremental Consistency",
        description="Rows: task_id, input_idx, kind (coverage|state|path|output), query_idx, lineno, var "
                    "(not for output), response (raw model text with [ANSWER]...[/ANSWER]). The last "
                    "stdout line is one JSON object: accuracy per kind (0-1) and ic (0-100).")
    reval_parser.add_argument("predictions", help="PREDICTIONS.jsonl")
    reval_parser.add_argument("--data-dir", default=None, help="folder with DREval_data.jsonl and DREval_tasks.jsonl")
    reval_parser.add_argument("--out", default=None, help="write each row with a `correct` field (JSONL)")
    reval_parser.add_argument("--backend", choices=("auto", "local", "docker"), default="auto")
    reval_parser.set_defaults(func=_score_reval, name="score reval")


def _score_cruxeval(args: argparse.Namespace) -> int:
    data = Path(args.data) if args.data else cruxeval_path()
    for path in (Path(args.generations), data):
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    try:
        generations = json.loads(Path(args.generations).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.generations} is not JSON: {exc}") from None
    if not isinstance(generations, dict):
        raise ValueError('expected a JSON object {"sample_i": [generation, ...]}')
    problems = load_problems(data)
    check_generations(generations, problems)  # before starting a sandbox
    started = time.perf_counter()
    with open_sandbox(backend=args.backend) as sandbox:
        scored = score_generations(generations, problems, args.mode, sandbox)
    elapsed = time.perf_counter() - started
    if args.out:
        write_atomically(Path(args.out), json.dumps(scored))
    checks = sum(len(v) for v in scored["raw_scored_generations"].values())
    print(f"scored {checks} generations of {len(problems)} problems in {elapsed:.1f} s", file=sys.stderr)
    print(json.dumps({"mode": args.mode, "pass_at_1": scored["pass_at_1"], "pass_at_5": scored["pass_at_5"]}))
    return 0


def _score_reval(args: argparse.Namespace) -> int:
    path = Path(args.predictions)
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no prediction rows")
    programs = load_reval(args.data_dir)
    check_rows(rows, programs)  # before starting a sandbox
    with open_sandbox(backend=args.backend) as sandbox:
        scored, summary = score_predictions(rows, programs, sandbox)
    if args.out:
        write_atomically(Path(args.out), "".join(json.dumps(row) + "\n" for row in scored))
    for line in summary["unavailable"]:
        print(f"unavailable: {line}", file=sys.stderr)
    print(json.dumps({kind: summary[kind] for kind in KINDS} | {"ic": summary["ic"], "n": summary["n"]}))
    return 0


def _score_livecodebench(args: argparse.Namespace) -> int:
    for path in (Path(args.generations), Path(args.data)):
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
    rows = livecodebench.read_rows(args.data)
    try:
        generations = livecodebench.read_generations(args.generations, rows, cot=args.cot)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.generations} is not JSON: {exc}") from None
    missing = [str(row["id"]) for row in rows if str(row["id"]) not in generations]
    if missing:
        raise ValueError(f"{args.generations} lacks {len(missing)} of the {len(rows)} samples of {args.data}, "
                         f"e.g. {missing[:3]}")
    started = time.perf_counter()
    with open_sandbox(backend=args.backend) as sandbox:
        scored = livecodebench.score_generations(generations, rows, sandbox)
    if args.out:
        write_atomically(Path(args.out), json.dumps(scored))
    checked = sum(mark is not None for marks in scored["raw_scored_generations"].values() for mark in marks)
    print(f"checked {checked} generations of {len(rows)} samples in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)
    print(json.dumps({"pass_at_1": scored["pass_at_1"]}))
    return 0
