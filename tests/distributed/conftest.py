"""What the distributed tests share: a half-trained tiny model on the tiny trace task, so that a
GRPO group's samples disagree and its advantages are not all zero."""

from __future__ import annotations

from pathlib import Path

import pytest

from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.training.settings import preset
from stepcode_core.training.tiny_task import tiny_task_rows, write_task_dataset
from tests.distributed.launching import GRPO, SFT, launch_training, rollouts, straddle_has_signal

TASKS, HELD_OUT = 528, 16


def write_trace_dataset(folder: Path, rows: list[dict]) -> Path:
    """``rows`` in trace_dataset's layout, the last HELD_OUT as the val split."""
    return write_task_dataset(folder, rows[:-HELD_OUT], rows[-HELD_OUT:])


@pytest.fixture(scope="session")
def half_trained(tmp_path_factory, local_sandbox, tiny_model):
    """{"dataset", "base", "sft"}: the tiny trace task as a trace_dataset folder, a tiny random Llama
    and that model after 272 SFT steps, when copying values has just begun to work (its samples
    are right and wrong). About two minutes on two cores, once per session."""
    import torch

    from stepcode_core.training.sft import run_sft

    root = tmp_path_factory.mktemp("half_trained")
    rows = tiny_task_rows(TASKS, 1, local_sandbox)
    dataset = write_trace_dataset(root / "dataset", rows)
    corpus = [row["prompt"] + "\n" + row["reference"] for row in rows]
    base = tiny_model(root / "base", materialize_embedded_model(stepcode_home() / "models"), corpus, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        settings = preset("cpu-smoke", seed=0, train_top_layers=0, sft_max_tasks=0, sft_epochs=17.0,
                          sft_learning_rate=3e-3, sft_batch_size=32, eval_tasks=0)
        run_sft(base, rows[:-HELD_OUT], root / "sft", settings)
    finally:
        torch.set_num_threads(threads)
    return {"dataset": dataset, "base": base, "sft": root / "sft"}


@pytest.fixture(scope="session")
def grpo_one_process(half_trained, tmp_path_factory):
    """``(result, folder, settings)`` of one GRPO step on one process, under the first seed whose
    middle group (the one that straddles two ranks) has something to learn on both of its halves.
    Which prompts the half-trained model gets right depends on the CPU's float rounding, so the seed
    is searched, not fixed: a group of all-equal rewards would test nothing of the cross-rank code."""
    for seed in range(GRPO["seed"], GRPO["seed"] + 8):
        settings = {**GRPO, "seed": seed}
        out = tmp_path_factory.mktemp(f"grpo1-seed{seed}") / "model"
        result = launch_training(1, "grpo", half_trained["sft"], half_trained["dataset"], out, settings)
        if straddle_has_signal(rollouts(out)):
            return result, out, settings
    pytest.fail("no GRPO seed of eight gave the straddling group mixed rewards on both halves")


@pytest.fixture(scope="session")
def sft_one_process(half_trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft1") / "model"
    return launch_training(1, "sft", half_trained["base"], half_trained["dataset"], out, SFT), out
