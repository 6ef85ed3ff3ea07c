"""``stepcode train sft|grpo``: one training phase outside Dagster, e.g. under ``accelerate launch``
for several GPUs (``python -m stepcode_core.training`` runs the same command)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from stepcode_core.training.modeling import resolve_model
from stepcode_core.training.phases import PHASES, run_phase, write_curves
from stepcode_core.training.settings import PRESETS, parse_overrides, preset
from stepcode_core.training.tasks import load_tasks
from stepcode_core.training.tracking import TENSORBOARD_DIR, Tracking


def add_parser(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="one training phase (SFT or Bi-Level GRPO) outside Dagster",
        description="Train from a Hugging Face folder on a trace_dataset artifact; prints one JSON line per "
                    "logged step, then one with the checkpoint folder and the run's numbers; TensorBoard event "
                    "files go to OUT/tensorboard.")
    train.add_argument("phase", choices=PHASES)
    train.add_argument("--model", required=True, help="Hugging Face folder to start from ('embedded': SmolLM2-135M)")
    train.add_argument("--dataset", required=True, help="a trace_dataset artifact folder (tasks/train.parquet ...)")
    train.add_argument("--out", required=True, help="where the checkpoint folder goes")
    train.add_argument("--preset", default="cpu-smoke", choices=sorted(PRESETS))
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a TrainSettings field (JSON values: 1e-6, true, \"vllm\")")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    settings = preset(args.preset, **parse_overrides(args.set))
    dataset = Path(args.dataset)
    if not (dataset / "tasks" / "train.parquet").is_file():
        raise FileNotFoundError(f"{dataset} is not a trace_dataset artifact (no tasks/train.parquet)")
    tasks = load_tasks(dataset, "train")
    out = Path(args.out)

    main = int(os.environ.get("RANK", "0")) == 0  # under accelerate launch only rank 0 speaks
    tracking = Tracking(out / TENSORBOARD_DIR if main else None, params=settings.to_dict())

    def progress(phase: str, step: int, total: int, row: dict) -> None:
        tracking.log(row, step)
        if main:
            print(json.dumps({"phase": phase, "step": step, "total": total, **row}), flush=True)

    with tracking:
        result = run_phase(args.phase, resolve_model(args.model), tasks, out, settings, progress=progress)
    if main:
        write_curves(result, out, f"{args.phase} ({settings.name})")
        print(json.dumps({"checkpoint_dir": str(result.checkpoint_dir), **result.metrics}))
    return 0
