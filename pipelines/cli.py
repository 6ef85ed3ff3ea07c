"""The ``stepcode`` command: every core and sandbox subcommand (:mod:`stepcode_core.cli`), plus the
Dagster demo and UI."""

from __future__ import annotations

import argparse
import os
import sys

from pipelines.instance import dagster_environment
from pipelines.quiet import quiet_libraries  # before stepcode_core.cli, which loads tqdm
from pipelines.ui import dagster_dev_command, run_supervised
from stepcode_core.cli import build_parser, run
from stepcode_core.training.settings import parse_overrides


def build_full_parser() -> argparse.ArgumentParser:
    """The installed command's parser: the core subcommands plus ``demo``, ``ablation`` and ``ui``."""
    parser, commands = build_parser()
    demo = commands.add_parser("demo", help="materialize the asset graph on the embedded default")
    demo.set_defaults(func=_demo)
    ablation = commands.add_parser("ablation", help="the ablation job: GRPO's reward modes x seeds, then ablation_report")
    ablation.add_argument("--preset", default="", help="training preset of the warm start and the runs "
                          "(default: the assets' own, tiny-ablation; with --model smollm2, cpu-demo)")
    ablation.add_argument("--model", default="", help="smollm2: the real_ablation job, from the demo's SFT checkpoint "
                          "on its held-out trace tasks; else the miniature's ablation_base model: tiny (default), "
                          "embedded or a folder")
    ablation.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="a TrainSettings field of the GRPO runs (JSON values: 5e-5, 8, true), e.g. "
                          "grpo_lambda=0.7; the warm start keeps its own")
    ablation.add_argument("--runs", default="", help="only these runs, comma-separated mode|seed keys "
                          "(e.g. 'bilevel|0'); default: every mode and seed")
    ablation.set_defaults(func=_ablation)
    ui = commands.add_parser("ui", help="start the Dagster UI (dagster dev) on this project")
    ui.add_argument("--port", type=int, default=3000)
    ui.set_defaults(func=_ui)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_full_parser(), argv)


def _demo(args: argparse.Namespace) -> int:
    # Imported when the command runs: loading the code location (Dagster and every asset) takes
    # seconds that the other commands should not pay.
    quiet_libraries()
    from pipelines.demo import run_demo

    return run_demo()


def _ablation(args: argparse.Namespace) -> int:
    quiet_libraries()
    from pipelines.demo import run_ablation

    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    runs = [key.strip() for key in args.runs.split(",") if key.strip()]
    return run_ablation(preset=args.preset, model=args.model, overrides=overrides, runs=runs)


def _ui(args: argparse.Namespace) -> int:
    env = {**os.environ, **dagster_environment()}
    print(f"starting the Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C stops it)", file=sys.stderr)
    return run_supervised(dagster_dev_command(args.port), env)


if __name__ == "__main__":
    raise SystemExit(main())
