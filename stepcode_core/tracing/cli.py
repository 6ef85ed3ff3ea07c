"""``stepcode instrument``: print P' (a program with execution-trace anchors), or instrument a JSONL file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stepcode_core.paths import write_atomically
from stepcode_core.tracing import anchors


def add_parser(commands: argparse._SubParsersAction) -> None:
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
        raise ValueError("give exactly one of FILE or --jsonl IN.jsonl")
    if args.file is not None:
        source = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        try:
            program = anchors.instrument(source, policy=args.policy)
        except anchors.InstrumentationError as exc:
            raise ValueError(f"{args.file}: {exc}") from None
        print(program.code)
        return 0
    return _instrument_jsonl(Path(args.jsonl), Path(args.out) if args.out else None, args.policy)


def _instrument_jsonl(source: Path, destination: Path | None, policy: str) -> int:
    if not source.is_file():
        raise FileNotFoundError(f"no such file: {source}")
    out = []
    failures = rows = 0
    with source.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                code = row["code"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{source}:{number}: not a row with a 'code' field ({exc})") from None
            rows += 1
            try:
                program = anchors.instrument(code, policy=policy)
                row["instrumented"] = program.code
                row["anchor_sites"] = [{"name": s.name, "line": s.line} for s in program.sites]
            except anchors.InstrumentationError as exc:
                failures += 1
                row["instrumented"] = None
                row["instrument_error"] = str(exc)
            out.append(json.dumps(row, ensure_ascii=False) + "\n")
    if destination is None:
        sys.stdout.write("".join(out))
    else:
        write_atomically(destination, "".join(out))
    print(f"instrumented {rows - failures}/{rows} rows ({policy} policy)"
          + (f"; {failures} failed, see 'instrument_error'" if failures else ""), file=sys.stderr)
    return 0
