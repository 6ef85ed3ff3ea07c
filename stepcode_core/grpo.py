"""Bi-Level GRPO advantages (DESIGN §1.5), as small pure functions in the manner of verl's core_algos.

Rewards of one prompt's group form a matrix ``R`` of shape (G, n + 1): G samples, the n state steps,
then the final answer as step n + 1 (last column).

* inter-trajectory: ``A_group[g, i] = (R[g, i] - mean_g R[:, i]) / (std_g R[:, i] + eps)``;
* intra-trajectory: ``A_intra[g, i] = R[g, i] * (1 + mean(R[g, i+1:]))`` for the state steps, and
  ``A_intra[g, n] = R[g, n]`` for the final answer. DESIGN writes the factor as
  ``1/(n-i) * sum_{j>i} r_j``; counting the final answer among the later steps (n + 1 - i of them)
  keeps it defined for i = n, so we read it as the mean of the later rewards;
* combined: ``A = A_group + lambda * A_intra`` (lambda = 0.3 in the paper).

Modes one setting apart: ``terminal`` (plain GRPO on the final reward, every step gets it), ``step``
(lambda = 0) and ``bilevel``. ``std`` is the sample standard deviation (N - 1), as in TRL and verl;
a group of one has no spread, and its group advantage is 0.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Mode = Literal["terminal", "step", "bilevel"]
MODES = ("terminal", "step", "bilevel")


def group_advantages(rewards: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Normalize each step's rewards across the group (rows are samples, columns are steps)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.shape[0] < 2:
        return np.zeros_like(rewards)
    mean = rewards.mean(axis=0, keepdims=True)
    std = rewards.std(axis=0, ddof=1, keepdims=True)
    return (rewards - mean) / (std + eps)


def intra_advantages(rewards: np.ndarray) -> np.ndarray:
    """Credit a correct step more when the steps after it (the final answer included) are right too."""
    rewards = np.asarray(rewards, dtype=np.float64)
    steps = rewards.shape[1]
    result = np.empty_like(rewards)
    for i in range(steps - 1):
        later = rewards[:, i + 1 :]
        result[:, i] = rewards[:, i] * (1.0 + later.mean(axis=1))
    result[:, steps - 1] = rewards[:, steps - 1]
    return result


def step_advantages(rewards: np.ndarray, mode: Mode = "bilevel", lam: float = 0.3, eps: float = 1e-6) -> np.ndarray:
    """Advantage of every (sample, step) of a group, shape (G, n + 1)."""
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 1:
        raise ValueError(f"rewards must have shape (G, n + 1), got {rewards.shape}")
    if mode == "terminal":
        final = group_advantages(rewards[:, -1:], eps)
        return np.repeat(final, rewards.shape[1], axis=1)
    if mode == "step":
        return group_advantages(rewards, eps)
    if mode == "bilevel":
        return group_advantages(rewards, eps) + lam * intra_advantages(rewards)
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def token_advantages(advantages: np.ndarray, token_steps: list[int]) -> np.ndarray:
    """Per-token advantages of one sample: token t gets the advantage of the step its segment
    belongs to (see :func:`stepcode_core.responses.step_of_offsets`)."""
    advantages = np.asarray(advantages, dtype=np.float64)
    steps = np.asarray(token_steps, dtype=np.int64)
    if steps.size and (steps.min() < 0 or steps.max() >= advantages.shape[0]):
        raise ValueError("a token's step lies outside the sample's steps")
    return advantages[steps]
