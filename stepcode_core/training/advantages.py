"""Bi-Level GRPO advantages (StepCodeReasoner, arXiv 2605.11922), as small pure functions in the manner of verl's core_algos.

Rewards of one prompt's group form a matrix ``R`` of shape (G, n + 1): G samples, the n state steps,
then the final answer as step n + 1 (last column).

* inter-trajectory: ``A_group[g, i] = (R[g, i] - mean_g R[:, i]) / (std_g R[:, i] + eps)``;
* intra-trajectory: ``A_intra[g, i] = R[g, i] * (1 + mean(R[g, i+1:]))`` for the state steps, and
  ``A_intra[g, n] = R[g, n]`` for the final answer. The paper writes the factor as
  ``1/(n-i) * sum_{j>i} r_j``; counting the final answer among the later steps (n + 1 - i of them)
  keeps it defined for i = n, so we read it as the mean of the later rewards;
* combined: ``A = A_group + lambda * A_intra`` (lambda = 0.3 in the paper).

Modes one setting apart: ``terminal`` (plain GRPO on the final reward, every step gets it), ``step``
(lambda = 0) and ``bilevel``. ``std`` is the sample standard deviation (N - 1), as in TRL and verl;
a group of one has no spread, and its group advantage is 0.

Samples of one group may have traces of different lengths (input prediction: each sample's states
are compared with the trace of the input *it* predicted). :func:`group_matrix` pads the shorter
ones with NaN, "no such step": a step's group statistics use the samples that have it, the intra
term averages the later steps a sample has, and a missing step's advantage stays NaN (no token of
that sample maps to it, see :func:`sample_token_steps`). Without NaN every formula is the one above.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Mode = Literal["terminal", "step", "bilevel"]
MODES = ("terminal", "step", "bilevel")


def group_advantages(rewards: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Normalize each step's rewards across the group (rows are samples, columns are steps). NaN
    marks a step a sample does not have; a step fewer than two samples have gets advantage 0."""
    rewards = np.asarray(rewards, dtype=np.float64)
    present = ~np.isnan(rewards)
    count = present.sum(axis=0, keepdims=True)
    filled = np.where(present, rewards, 0.0)
    mean = filled.sum(axis=0, keepdims=True) / np.maximum(count, 1)
    spread = np.where(present, rewards - mean, 0.0)
    std = np.sqrt((spread**2).sum(axis=0, keepdims=True) / np.maximum(count - 1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):  # columns with no spread are replaced by 0 below
        result = np.where(count >= 2, spread / (std + eps), 0.0)
    return np.where(present, result, np.nan)


def intra_advantages(rewards: np.ndarray) -> np.ndarray:
    """Credit a correct step more when the steps after it (the final answer included) are right too."""
    rewards = np.asarray(rewards, dtype=np.float64)
    steps = rewards.shape[1]
    result = np.empty_like(rewards)
    for i in range(steps - 1):
        later = rewards[:, i + 1 :]  # the final column is never NaN, so the mean always has a term
        later_mean = np.where(np.isnan(later), 0.0, later).sum(axis=1) / (~np.isnan(later)).sum(axis=1)
        result[:, i] = rewards[:, i] * (1.0 + later_mean)
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


def group_matrix(state_rewards: list[list[float]], final_rewards: list[float]) -> np.ndarray:
    """One group's reward matrix (G, n + 1): each sample's state rewards, NaN-padded to the longest,
    then its final reward in the last column."""
    width = max((len(row) for row in state_rewards), default=0)
    matrix = np.full((len(state_rewards), width + 1), np.nan)
    for g, (row, final) in enumerate(zip(state_rewards, final_rewards)):
        matrix[g, : len(row)] = row
        matrix[g, -1] = final
    return matrix


def sample_token_steps(segments: list[int], sample_steps: int, matrix_steps: int) -> list[int]:
    """Columns of the group matrix for one sample's tokens: a sample with ``sample_steps`` states
    maps segment ``k < sample_steps`` to column ``k`` and its final segment to the last column
    (``matrix_steps``), which differs when the group matrix is padded."""
    return [k if k < sample_steps else matrix_steps for k in segments]


def token_advantages(advantages: np.ndarray, token_steps: list[int]) -> np.ndarray:
    """Per-token advantages of one sample: token t gets the advantage of the step its segment
    belongs to (see :func:`stepcode_core.rewards.responses.step_of_offsets`)."""
    advantages = np.asarray(advantages, dtype=np.float64)
    steps = np.asarray(token_steps, dtype=np.int64)
    if steps.size and (steps.min() < 0 or steps.max() >= advantages.shape[0]):
        raise ValueError("a token's step lies outside the sample's steps")
    return advantages[steps]


def token_segments(token_ids: list[int], decode, bounds: list[int]) -> list[int]:
    """Segment of each token of a completion: ``bounds`` are the character offsets where segments end
    (the ends of the states, ascending), ``decode(ids)`` the tokenizer's decoding. Token ``t`` starts
    at ``len(decode(token_ids[:t]))`` and belongs to the segment of that offset (as
    :func:`stepcode_core.rewards.responses.step_of_offsets` assigns characters). Each bound costs a binary
    search of O(log T) decodes, not a decode per token, so 4096-token completions stay cheap."""
    length = len(token_ids)
    start = {}

    def start_of(t: int) -> int:
        if t not in start:
            start[t] = len(decode(token_ids[:t]))
        return start[t]

    firsts = []  # first token of each later segment
    low = 0
    for bound in bounds:
        lo, hi = low, length  # the first token starting at or after ``bound`` (``length``: none)
        while lo < hi:
            mid = (lo + hi) // 2
            if start_of(mid) >= bound:
                hi = mid
            else:
                lo = mid + 1
        firsts.append(lo)
        low = lo
    segments, segment = [], 0
    for t in range(length):
        while segment < len(firsts) and t >= firsts[segment]:
            segment += 1
        segments.append(segment)
    return segments
