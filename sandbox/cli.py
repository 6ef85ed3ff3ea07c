"""``stepcode sandbox run FILE`` and ``stepcode sandbox run-batch IN.jsonl``: run untrusted Python
in the sandbox and print each result as one JSON object, so that the sandbox can be audited from
outside.

Programs get an empty environment (never this process's), so secrets in the caller's shell do not
leak into untrusted code. Input that cannot be used raises ``ValueError`` or ``OSError`` (the
``stepcode`` command prints it on stderr and exits with 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sandbox.contract import Batch, ExecutionRequest
from sandbox.open import BACKENDS, open_sandbox

ROW_FIELDS = ("code", "stdin", "timeout_s", "memory_mb", "output_limit_bytes")


def add_parser(commands) -> None:
    """Add the ``sandbox`` subcommand to an argparse subparsers object."""
    parser = commands.add_parser("sandbox", help="run untrusted Python code in the sandbox")
    sub = parser.add_subparsers(dest="sandbox_command", required=True)
    run = sub.add_parser("run", help="run one Python file; prints one JSON result line",
                         description="Exit status 0 when the program's status is ok, else 1.")
    run.add_argument("file", help="Python source file to run (as a script)")
    run.add_argument("--backend", choices=BACKENDS, default="auto")
    run.add_argument("--timeout", type=float, default=5.0, help="wall-time limit in seconds")
    run.add_argument("--memory-mb", type=int, default=512, help="memory limit in MiB")
    run.add_argument("--stdin", default=None, help="file whose contents are the program's stdin")
    run.set_defaults(func=_run, name="sandbox run")
    batch = sub.add_parser(
        "run-batch", help="run every row of a JSONL file as one batch; prints one JSON result per row",
        description="Rows: {\"code\": str, \"stdin\"?: str, \"timeout_s\"?: float, \"memory_mb\"?: int, "
                    "\"output_limit_bytes\"?: int}. Every row is an item of one batch: its own process, its "
                    "own limits, its own result, nothing left by an earlier row. Prints one JSON object per "
                    "row, in order (status, exit_code, stdout, stderr, duration_s). Exit status 0 when the "
                    "batch ran, whatever the rows' statuses.")
    batch.add_argument("rows", metavar="IN.jsonl", help="one JSON object per line ('-' for standard input)")
    batch.add_argument("--backend", choices=BACKENDS, default="auto")
    batch.add_argument("--prelude", default=None, metavar="FILE", help="code compiled once, run before every row")
    batch.add_argument("--hash-seed", type=int, default=None, help="PYTHONHASHSEED of every row")
    batch.add_argument("--workers", type=int, default=None, help="warm workers (default: one per CPU)")
    batch.set_defaults(func=_run_batch, name="sandbox run-batch")


def _run(args: argparse.Namespace) -> int:
    code = Path(args.file).read_text(encoding="utf-8", errors="replace")
    stdin = Path(args.stdin).read_text(encoding="utf-8", errors="replace") if args.stdin else ""
    request = ExecutionRequest(code=code, stdin=stdin, timeout_s=args.timeout, memory_mb=args.memory_mb)
    with open_sandbox(backend=args.backend, workers=1) as sb:
        result = sb.run(request)
    print(json.dumps(result.to_dict()))
    return 0 if result.ok else 1


def read_rows(text: str, source: str) -> list[ExecutionRequest]:
    """The requests of a run-batch file; ValueError naming the line of the first bad row."""
    requests = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "code" not in row:
            raise ValueError(f"{where}: expected an object with a 'code' field")
        unknown = sorted(set(row) - set(ROW_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; a row has {', '.join(ROW_FIELDS)}")
        try:
            requests.append(ExecutionRequest(**row))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
    if not requests:
        raise ValueError(f"{source}: no rows")
    return requests


def _run_batch(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.rows == "-" else Path(args.rows).read_text(encoding="utf-8")
    requests = read_rows(text, args.rows)
    prelude = Path(args.prelude).read_text(encoding="utf-8") if args.prelude else ""
    batch = Batch(requests, prelude=prelude, hash_seed=args.hash_seed)
    with open_sandbox(backend=args.backend, workers=args.workers) as sb:
        (results,) = sb.run_batches([batch])
    for result in results:
        print(json.dumps(result.to_dict()))
    return 0
