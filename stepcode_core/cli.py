"""Core subcommands of the ``stepcode`` command line (the entry point is :mod:`pipelines.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from stepcode_core import anchors


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
