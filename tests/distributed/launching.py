"""Helpers of the distributed tests: launch ``stepcode train`` on N processes the way a user does,
and read what a run left (weights, recorded rollouts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# One GRPO step: 3 prompts x G = 6; on two processes the middle group straddles the ranks.
GRPO_LR = 3e-4
GRPO = {"grpo_steps": 1, "grpo_prompts_per_step": 3, "grpo_num_generations": 6, "grpo_max_response_tokens": 64,
        "grpo_learning_rate": GRPO_LR, "grpo_reproducible_rollouts": True, "grpo_record_rollouts": True,
        "train_top_layers": 0, "eval_tasks": 0, "tasks": "output", "seed": 1}
SFT_LR = 1e-3
SFT = {"sft_max_tasks": 96, "sft_batch_size": 32, "sft_learning_rate": SFT_LR, "train_top_layers": 0, "eval_tasks": 0,
       "tasks": "output", "seed": 0}
FSDP = ["--config_file", "configs/accelerate_fsdp.yaml", "--mixed_precision", "no"]  # CPU: no bf16 autocast


def launch_training(processes: int, phase: str, model: Path, dataset: Path, out: Path, settings: dict,
                    accelerate: list[str] | None = None) -> dict:
    """``stepcode train PHASE`` as a user runs it: plain python for one process, ``accelerate launch
    --num_processes N`` for more (``accelerate`` replaces the default DDP flags). Returns the final
    JSON line (the checkpoint folder and the run's numbers) with ``steps_logged``, the per-step lines."""
    module = [sys.executable, "-m", "stepcode_core.training", phase]
    if processes > 1 or accelerate:
        flags = accelerate or ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
        module = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                  "--num_machines", "1", *flags, "-m", "stepcode_core.training", phase]
    command = [*module, "--model", str(model), "--dataset", str(dataset), "--out", str(out)]
    for key, value in settings.items():
        command += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}"
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]  # not TRL's dicts
    result = next(line for line in reversed(lines) if "checkpoint_dir" in line)
    result["steps_logged"] = [line for line in lines if "phase" in line]
    return result


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def update_vector(before: dict, after: dict):
    """Every weight's change, flattened into one vector (names in sorted order)."""
    import torch

    assert sorted(before) == sorted(after)
    return torch.cat([(after[name].float() - before[name].float()).flatten() for name in sorted(before)])


def rollouts(folder: Path) -> dict[int, dict]:
    """The recorded rollouts of every rank, by index in the global batch."""
    rows = [json.loads(line) for path in sorted(Path(folder).glob("rollouts/rank*.jsonl")) for line in path.open()]
    return {row["index"]: row for row in rows}


def straddle_has_signal(rows: dict[int, dict]) -> bool:
    """The group split across two ranks (indices 6..11) has a non-zero advantage on each side."""
    import numpy as np

    halves = ([rows[i] for i in range(6, 9)], [rows[i] for i in range(9, 12)])
    return all(any(np.abs(row["advantages"]).max() > 0 for row in half if row["advantages"]) for half in halves)


def assert_same_grpo_step(one: tuple[dict, object], two: tuple[dict, object], start, straddle: bool = True) -> None:
    """The same completions, verdicts and per-token advantages, and the same update (see
    test_equivalence's docstring for the tolerances); ``straddle``: the group split across the two
    ranks has non-zero advantages on both."""
    import numpy as np

    (one_result, one_dir), (two_result, two_dir) = one, two
    assert one_result["processes"] == 1 and two_result["processes"] == 2
    single, double = rollouts(one_dir), rollouts(two_dir)
    assert sorted(single) == sorted(double) == list(range(18))
    assert {row["rank"] for row in double.values()} == {0, 1}
    group = [double[i] for i in range(6, 12)]  # split across the ranks
    assert {row["rank"] for row in group} == {0, 1}
    if straddle:  # and it has something to learn from, on both sides
        assert any(np.abs(row["advantages"]).max() > 0 for row in group if row["rank"] == 0)
        assert any(np.abs(row["advantages"]).max() > 0 for row in group if row["rank"] == 1)
    for index in range(18):
        a, b = single[index], double[index]
        assert a["task_id"] == b["task_id"] and a["completion_ids"] == b["completion_ids"], index
        assert (a["step_rewards"], a["final_reward"]) == (b["step_rewards"], b["final_reward"]), index
        np.testing.assert_allclose(b["advantages"], a["advantages"], atol=1e-6, err_msg=f"completion {index}")
    assert_same_update(load_weights(start), load_weights(one_dir), load_weights(two_dir), GRPO_LR)


def assert_same_update(before: dict, after_one: dict, after_two: dict, lr: float) -> None:
    one = update_vector(before, after_one)
    two = update_vector(before, after_two)
    assert one.abs().max().item() >= 0.5 * lr  # the step did move the weights
    assert (two - one).norm().item() <= 1e-3 * one.norm().item()
    assert (two - one).abs().max().item() <= 0.1 * lr
