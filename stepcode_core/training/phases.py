"""One training phase by name, and what every run writes beside its checkpoint: the shared body of
``stepcode train`` and the pipeline's training child (:mod:`pipelines.training_child`)."""

from __future__ import annotations

import json
from pathlib import Path

from stepcode_core.training.curves import plot_curves
from stepcode_core.training.numerics import pin_portable_kernels
from stepcode_core.training.settings import Progress, TrainingResult, TrainSettings
from stepcode_core.training.sft import run_sft

PHASES = ("sft", "grpo")


def run_phase(phase: str, model_dir: str | Path, tasks: list[dict], output_dir: str | Path, settings: TrainSettings,
              *, sandbox=None, progress: Progress | None = None) -> TrainingResult:
    """SFT or Bi-Level GRPO from ``model_dir``; GRPO verifies its rewards in ``sandbox`` (opened by
    ``run_grpo`` when None), SFT needs none. ``settings.portable_kernels`` pins the process's kernel
    path first (so the held-out scoring after it runs on that path too)."""
    if settings.portable_kernels:
        if settings.bf16:
            raise ValueError("portable_kernels computes in fp32 (bf16 has no portable kernels): set bf16 to false")
        pin_portable_kernels()
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if phase == "sft":
        return run_sft(model_dir, tasks, output_dir, settings, progress)
    if phase == "grpo":
        from stepcode_core.training.grpo import (
            run_grpo,  # TRL and torch at import: only GRPO pays it
        )

        return run_grpo(model_dir, tasks, output_dir, settings, sandbox=sandbox, progress=progress)
    raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")


def write_curves(result: TrainingResult, folder: Path, title: str) -> None:
    """The run's logged steps as ``curves.json`` and their plot as ``curves.png`` in ``folder``."""
    (folder / "curves.json").write_text(json.dumps(result.curves, indent=1))
    plot_curves(result.curves, folder / "curves.png", title=title)
