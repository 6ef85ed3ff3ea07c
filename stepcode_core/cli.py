"""Core subcommands of the ``stepcode`` command line (the entry point is :mod:`pipelines.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stepcode_core.tracing import anchors


def add_instrument_parser(commands: argparse._SubParsersAction) -> None:
    instrument = commands.add_parser(
        "instrument",
        help="print P' (the program with execution-trace anchors)",
        description="Insert execution-trace anchors into a program. With FILE, print P'; with --jsonl, "
        "read CRUXEval-schema rows and write each with a field 'instrumented' holding P'.",
    )
    instrument.add_argument("file", nargs="?", help="a Python file ('-' for standard input)")
    instrument.add_argument("--policy", choices=anchors.POLICIES, default="paper")
    instrument.add_argument("--jsonl", metavar="IN.jsonl", help="rows with a 'code' field")
    instrument.add_argument("--out", metavar="OUT.jsonl", help="where --jsonl rows go (default: stdout)")
    instrument.set_defaults(func=_instrument)


def _instrument(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.jsonl is None):
        print("stepcode instrument: give exactly one of FILE or --jsonl IN.jsonl", file=sys.stderr)
        return 2
    if args.file is not None:
        source = sys.stdin.read() if args.file == "-" else _read_text(args.file)
        try:
            program = anchors.instrument(source, policy=args.policy)
        except anchors.InstrumentationError as exc:
            print(f"stepcode instrument: {args.file}: {exc}", file=sys.stderr)
            return 1
        print(program.code)
        return 0
    return _instrument_jsonl(Path(args.jsonl), Path(args.out) if args.out else None, args.policy)


def _instrument_jsonl(source: Path, destination: Path | None, policy: str) -> int:
    if not source.is_file():
        print(f"stepcode instrument: no such file: {source}", file=sys.stderr)
        return 2
    out = sys.stdout if destination is None else _atomic_writer(destination)
    failures = rows = 0
    with source.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                code = row["code"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                print(f"stepcode instrument: {source}:{number}: not a row with a 'code' field ({exc})", file=sys.stderr)
                return 1
            rows += 1
            try:
                program = anchors.instrument(code, policy=policy)
                row["instrumented"] = program.code
                row["anchor_sites"] = [{"name": s.name, "line": s.line} for s in program.sites]
            except anchors.InstrumentationError as exc:
                failures += 1
                row["instrumented"] = None
                row["instrument_error"] = str(exc)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if destination is not None:
        out.commit()
    print(f"instrumented {rows - failures}/{rows} rows ({policy} policy)"
          + (f"; {failures} failed, see 'instrument_error'" if failures else ""), file=sys.stderr)
    return 0


class _atomic_writer:
    """Write to a temp file beside the target, rename on commit: no half-written output on a crash."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.tmp.open("w", encoding="utf-8")

    def write(self, text: str) -> None:
        self.handle.write(text)

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.tmp, self.path)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SystemExit(f"stepcode: cannot read {path}: {exc.strerror}") from exc


def add_score_parser(commands: argparse._SubParsersAction) -> None:
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
    crux.add_argument("--data", metavar="CRUXEVAL.jsonl", help="default: ../shared/data/cruxeval/cruxeval.jsonl")
    crux.add_argument("--out", metavar="SCORED.json", help="where the scored file goes")
    crux.add_argument("--backend", choices=("auto", "local", "docker"), default="auto")
    crux.set_defaults(func=_score_cruxeval)

    from stepcode_core.evaluation.reval import add_reval_parser

    add_reval_parser(benchmarks)


def _score_cruxeval(args: argparse.Namespace) -> int:
    import time

    from sandbox import open_sandbox
    from stepcode_core.evaluation.cruxeval import load_problems, score_generations
    from stepcode_core.paths import cruxeval_path

    data = Path(args.data) if args.data else cruxeval_path()
    for path in (Path(args.generations), data):
        if not path.is_file():
            print(f"stepcode score cruxeval: no such file: {path}", file=sys.stderr)
            return 2
    try:
        generations = json.loads(Path(args.generations).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        print(f"stepcode score cruxeval: {args.generations} is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(generations, dict):
        print("stepcode score cruxeval: expected a JSON object {\"sample_i\": [generation, ...]}", file=sys.stderr)
        return 2
    problems = load_problems(data)
    started = time.perf_counter()
    with open_sandbox(backend=args.backend) as sandbox:
        try:
            scored = score_generations(generations, problems, args.mode, sandbox)
        except ValueError as exc:
            print(f"stepcode score cruxeval: {exc}", file=sys.stderr)
            return 2
    elapsed = time.perf_counter() - started
    if args.out:
        writer = _atomic_writer(Path(args.out))
        writer.write(json.dumps(scored))
        writer.commit()
    checks = sum(len(v) for v in scored["raw_scored_generations"].values())
    print(f"scored {checks} generations of {len(problems)} problems in {elapsed:.1f} s", file=sys.stderr)
    print(json.dumps({"mode": args.mode, "pass_at_1": scored["pass_at_1"], "pass_at_5": scored["pass_at_5"]}))
    return 0
