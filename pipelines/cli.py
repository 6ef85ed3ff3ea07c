"""The ``stepcode`` command: core and sandbox subcommands, plus the Dagster demo and UI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sandbox.cli import add_sandbox_parser
from stepcode_core.cli import add_instrument_parser, add_score_parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stepcode", description="StepCode: execution-trace reasoning for code LLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    add_instrument_parser(commands)
    add_sandbox_parser(commands)
    add_score_parser(commands)

    demo = commands.add_parser("demo", help="materialize the asset graph on the embedded default")
    demo.set_defaults(func=_demo)

    ui = commands.add_parser("ui", help="start the Dagster UI (dagster dev) on this project")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_ui)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def _demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo()


def _ui(args: argparse.Namespace) -> int:
    from pipelines.instance import dagster_environment

    env = {**os.environ, **dagster_environment()}
    dagster = Path(sys.executable).with_name("dagster")
    command = [str(dagster), "dev", "-m", "pipelines.definitions", "--port", str(args.port)]
    print(f"starting the Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    os.execve(command[0], command, env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
