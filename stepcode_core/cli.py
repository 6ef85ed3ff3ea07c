"""The ``stepcode`` command line: one parser whose subcommands live beside their code
(``instrument``: :mod:`stepcode_core.tracing.cli`, ``sandbox``: :mod:`sandbox.cli`, ``score``:
:mod:`stepcode_core.evaluation.cli`, ``train``: :mod:`stepcode_core.training.cli`, ``data``:
:mod:`stepcode_core.data.cli`; ``demo`` and ``ui`` are added by :mod:`pipelines.cli`, the installed
entry point).

One convention for every subcommand: its handler returns the exit status (0 when it did its work, 1
when that work found a failure, e.g. a program that did not run ``ok``); input it cannot use (a file
that is not there, content that does not parse) raises ``ValueError`` or ``OSError``, which becomes
``stepcode <command>: <message>`` on stderr and exit status 2, as argparse does for bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from sandbox import cli as sandbox_cli
from stepcode_core.data import cli as data_cli
from stepcode_core.evaluation import cli as evaluation_cli
from stepcode_core.tracing import cli as tracing_cli
from stepcode_core.training import cli as training_cli


def build_parser(prog: str = "stepcode") -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog=prog, description="StepCode: execution-trace reasoning for code LLMs")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (tracing_cli, sandbox_cli, evaluation_cli, training_cli, data_cli):
        module.add_parser(commands)
    return parser, commands


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen handler under the convention above."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError) as exc:
        print(f"{parser.prog} {getattr(args, 'name', args.command)}: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None, prog: str = "stepcode") -> int:
    parser, _ = build_parser(prog)
    return run(parser, argv)
