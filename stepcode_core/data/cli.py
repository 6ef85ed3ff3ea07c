"""``stepcode data fetch|status``: the reference benchmark data (CRUXEval, REval) in the user's cache
(:mod:`stepcode_core.data.reference`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stepcode_core.data import reference


def add_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="the reference benchmark data (CRUXEval, REval): fetch and check it")
    actions = data.add_subparsers(dest="action", required=True)
    fetch = actions.add_parser(
        "fetch", help="download CRUXEval and REval at pinned commits (or import a folder), sha256-checked",
        description="Downloads each file from the benchmark's public repository at its pinned commit, checks its "
                    "sha256 and stores it in the cache folder ($STEPCODE_REFERENCE_DATA, else "
                    "$STEPCODE_HOME/reference-data, else ~/.cache/stepcode/reference-data). Files already there "
                    "and intact are kept. Offline: --from DIR imports a folder in the cache's layout.")
    fetch.add_argument("--from", dest="source", metavar="DIR", help="import this folder instead of downloading")
    fetch.add_argument("--mirror", metavar="URL", help="base URL laid out as raw.githubusercontent.com "
                       f"(default: ${reference.MIRROR_VARIABLE}, else GitHub)")
    fetch.add_argument("--benchmark", choices=reference.BENCHMARKS, action="append",
                       help="only this benchmark (repeatable; default: all)")
    fetch.set_defaults(func=_fetch, name="data fetch")
    status = actions.add_parser("status", help="where the cache is and whether each file is there and intact")
    status.set_defaults(func=_status, name="data status")


def _fetch(args: argparse.Namespace) -> int:
    benchmarks = tuple(args.benchmark or reference.BENCHMARKS)
    folder = reference.reference_data_dir()
    if args.source:
        _, absent = reference.import_folder(Path(args.source), folder, benchmarks, report=_say)
        if absent:
            print(f"incomplete: {len(absent)} files were not in {args.source}; {reference.FETCH_HINT}", file=sys.stderr)
            return 1
    else:
        stored = reference.fetch(folder, args.mirror, benchmarks, report=_say)
        _say(f"{len(stored)} files downloaded" if stored else "every file was already there and intact")
    _say(f"reference data: {folder}")
    return 0


def _status(args: argparse.Namespace) -> int:
    folder = reference.reference_data_dir()
    rows = reference.status(folder)
    print(f"reference data: {folder}")
    for row in rows:
        print(f"  {row['state']:8s} {row['path']}" + (f" (sha256 {row['sha256']})" if "sha256" in row else ""))
    if any(row["state"] != "ok" for row in rows):
        print(reference.FETCH_HINT, file=sys.stderr)
        return 1
    return 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
