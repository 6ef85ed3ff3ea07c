"""Two processes train as one does (marker ``distributed``): DDP over gloo on the CPU, and what an
FSDP config does there.

One Bi-Level GRPO step on the same global batch, 3 prompts x G = 6 = 18 completions: on two
processes each rank holds 9, so the middle group (indices 6..11) straddles the ranks. Rollouts are
reproducible (each completion sampled under a seed of its own place in the global batch), so both
runs see the same completions; what may differ is only the cross-process code: the gathered
verdicts, each rank's offset into them, the gradient all-reduce and the loss normalization.

Tolerances. Advantages: 1e-6 (they are computed from the same gathered verdicts, in float64, then
cast to float32). Weights: the runs add the same per-token terms in a different order (per-rank
sums, then the all-reduce), which changes a float32 gradient by ~1e-7 of its terms. Adam's first
step moves each weight by lr * g / (|g| + eps), about lr wherever g is not tiny, so rounding only
matters where g's terms nearly cancel: measured, 2 of 576,128 weights moved by more than 1e-6 (at
most 4e-6, 1.3% of lr) and the update as a whole by 2e-5 of its norm. A wrong advantage changes or
flips g on many weights, each by up to 2 lr. So the updates must agree to 1e-3 of their norm and
every weight to 10% of lr, and the update must be at least half of lr somewhere, so that a step
that did nothing cannot pass.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.distributed.launching import (
    FSDP,
    SFT,
    SFT_LR,
    assert_same_grpo_step,
    assert_same_update,
    launch_training,
    load_weights,
)

pytestmark = pytest.mark.distributed


def test_grpo_step_on_two_ddp_processes_equals_one(half_trained, grpo_one_process, tmp_path):
    one, one_dir, settings = grpo_one_process
    two = launch_training(2, "grpo", half_trained["sft"], half_trained["dataset"], tmp_path / "model", settings)
    assert two["distributed"] == "MULTI_CPU"
    assert_same_grpo_step((one, one_dir), (two, tmp_path / "model"), half_trained["sft"])


def test_sft_on_two_ddp_processes_gives_the_same_loss_curve(half_trained, sft_one_process, tmp_path):
    one, one_dir = sft_one_process
    two = launch_training(2, "sft", half_trained["base"], half_trained["dataset"], tmp_path / "model", SFT)
    assert two["distributed"] == "MULTI_CPU" and two["steps"] == one["steps"] == 3
    losses_one = [row["loss"] for row in one["steps_logged"]]
    losses_two = [row["loss"] for row in two["steps_logged"]]
    assert len(losses_one) == len(losses_two) == 3 and losses_one[-1] < losses_one[0]
    # Each logged loss is the token mean over the same 32 sequences; only summation order differs.
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)
    base = load_weights(half_trained["base"])
    assert_same_update(base, load_weights(one_dir), load_weights(tmp_path / "model"), SFT_LR)


def test_fsdp_config_on_two_cpu_processes(half_trained, sft_one_process, grpo_one_process, tmp_path):
    """configs/accelerate_fsdp.yaml (FSDP2, bf16 off) on CPU processes. accelerate 1.15 turns an FSDP
    config into FSDP only on GPU-like devices: on CPU processes over gloo it runs plain DDP
    (distributed type MULTI_CPU), without an error. Recorded here, and in docs/guides/gpus-kubernetes.md; the results
    are those of one process all the same. FSDP itself is exercised only where GPUs are."""
    sft = launch_training(2, "sft", half_trained["base"], half_trained["dataset"], tmp_path / "sft", SFT, accelerate=FSDP)
    assert sft["distributed"] == "MULTI_CPU"  # not "FSDP": if this changes, accelerate shards on CPU now
    np.testing.assert_allclose([r["loss"] for r in sft["steps_logged"]],
                               [r["loss"] for r in sft_one_process[0]["steps_logged"]], rtol=1e-5)
    base = load_weights(half_trained["base"])
    assert_same_update(base, load_weights(sft_one_process[1]), load_weights(tmp_path / "sft"), SFT_LR)
    one, one_dir, settings = grpo_one_process
    grpo = launch_training(2, "grpo", half_trained["sft"], half_trained["dataset"], tmp_path / "grpo", settings,
                           accelerate=FSDP)
    assert grpo["distributed"] == "MULTI_CPU"
    assert_same_grpo_step((one, one_dir), (grpo, tmp_path / "grpo"), half_trained["sft"])
