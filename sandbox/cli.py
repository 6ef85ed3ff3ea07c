"""``stepcode sandbox run FILE``: run one program in the sandbox and print the result as JSON.

The program gets an empty environment (never this process's), so secrets in the caller's shell do
not leak into untrusted code. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_sandbox_parser(commands) -> None:
    """Add the ``sandbox`` subcommand to an argparse subparsers object."""
    parser = commands.add_parser("sandbox", help="run untrusted Python code in the sandbox")
    sub = parser.add_subparsers(dest="sandbox_command", required=True)
    run = sub.add_parser("run", help="run one Python file; prints one JSON result line")
    run.add_argument("file", help="Python source file to run (as a script)")
    run.add_argument("--backend", choices=["auto", "local", "docker"], default="auto")
    run.add_argument("--timeout", type=float, default=5.0, help="wall-time limit in seconds")
    run.add_argument("--memory-mb", type=int, default=512, help="memory limit in MiB")
    run.add_argument("--stdin", default=None, help="file whose contents are the program's stdin")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sandbox import ExecutionRequest, open_sandbox

    try:
        with open(args.file, encoding="utf-8", errors="replace") as fh:
            code = fh.read()
        stdin = ""
        if args.stdin:
            with open(args.stdin, encoding="utf-8", errors="replace") as fh:
                stdin = fh.read()
        request = ExecutionRequest(code=code, stdin=stdin, timeout_s=args.timeout, memory_mb=args.memory_mb)
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 2
    with open_sandbox(backend=args.backend, workers=1) as sb:
        result = sb.run(request)
    print(json.dumps(result.to_dict()))
    return 0 if result.status == "ok" else 1
