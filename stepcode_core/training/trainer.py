"""Bi-Level GRPO on TRL: a ``GRPOTrainer`` subclass that feeds per-token advantages.

What TRL 1.16 does and we use as is: batching and the prompt sampler that repeats each prompt G
times, rollouts (transformers ``generate``, or vLLM with ``use_vllm``), the old/reference log-probs,
the clipped per-token surrogate with optional KL (``beta``) and its token-mean aggregation
(``loss_type="dapo"``, verl's default ``token-mean``), the optimizer, gradient accumulation,
accelerate/FSDP/DeepSpeed, PEFT, logging.

What we write by hand, because no library does it: TRL's advantage is one number per completion
(its rewards are per sequence). Bi-Level GRPO needs one per *step* of a completion, mapped onto
the tokens of that step's segment. So :class:`BiLevelGRPOTrainer` overrides
``_generate_and_score_completions``: after TRL has generated and called the reward function (which
verifies every response in the sandbox and keeps the per-step verdicts), it builds each group's
step-reward matrix, computes the advantages with :mod:`stepcode_core.training.advantages`, maps them onto the
completion tokens and replaces ``advantages`` (B,) with a (B, T) tensor. TRL's loss unsqueezes only
1-D advantages (``_compute_loss``), so the (B, T) tensor multiplies the per-token ratios directly.
TRL's own reward normalization (``scale_rewards``) then plays no part in the update.

Across processes: a group's G samples may sit on two ranks, so the verdicts are gathered (in rank
order, as TRL gathers rewards) before the group statistics, and each rank takes its own rows back at
``process_index * len(local)``. ``reproducible_rollouts`` samples each completion alone under a seed
of its own, and ``record_to`` writes every completion with its verdict and per-token advantages:
together they let a test compare a distributed step with a single-process one.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from trl import GRPOTrainer

from stepcode_core.rewards.responses import parse_response
from stepcode_core.rewards.verify import TaskSpec, Verdict, step_accuracy, verify
from stepcode_core.training.advantages import (
    group_matrix,
    sample_token_steps,
    step_advantages,
    token_advantages,
    token_segments,
)
from stepcode_core.training.fast_path import (
    BF16RolloutCopy,
    inverse_cdf_sampling,
    sharing_prefill,
    wants_bf16_rollout,
)
from stepcode_core.training.lean_decode import lean_decoding


def completion_text(completion) -> str:
    """TRL passes a conversational completion as a list of messages, a plain one as text."""
    if isinstance(completion, list):
        return "".join(str(message.get("content") or "") for message in completion if isinstance(message, dict))
    return completion if isinstance(completion, str) else ""


class SandboxReward:
    """TRL reward function: verifies each response (:func:`stepcode_core.rewards.verify.verify`, in the
    sandbox) and returns one scalar per completion (mean over the states and the final answer, for
    TRL's logs); the per-step verdicts of the last call stay in ``last`` for the trainer."""

    __name__ = "stepcode_reward"

    def __init__(self, sandbox, timeout_s: float = 3.0, memory_mb: int = 512):
        self.sandbox = sandbox
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.last: list[Verdict] = []
        self.seconds = 0.0  # time of the last call

    def __call__(self, prompts, completions, task, entry_point, input, output, steps_json, code, policy, **_):
        specs = [
            TaskSpec(t, e, i, o or "None", tuple(tuple(pair) for pair in json.loads(s)), c, p)
            for t, e, i, o, s, c, p in zip(task, entry_point, input, output, steps_json, code, policy)
        ]
        started = time.perf_counter()
        self.last = verify(specs, [completion_text(c) for c in completions], self.sandbox,
                           timeout_s=self.timeout_s, memory_mb=self.memory_mb)
        self.seconds = time.perf_counter() - started
        return [verdict.reward for verdict in self.last]


def group_token_advantages(verdicts: list[Verdict], mode: str, lam: float) -> list[np.ndarray]:
    """Step advantages of one group, per sample: row g has the advantage of each of the sample's
    states (``len(step_rewards)``), then of its final answer (last entry)."""
    matrix = group_matrix([v.step_rewards for v in verdicts], [v.final_reward for v in verdicts])
    advantages = step_advantages(matrix, mode, lam)
    return [np.concatenate([row[: len(v.step_rewards)], row[-1:]]) for v, row in zip(verdicts, advantages)]


def per_token(advantages: np.ndarray, text: str, token_ids: list[int], decode) -> np.ndarray:
    """One sample's per-token advantages: token t gets the advantage of its step's segment."""
    steps = len(advantages) - 1
    bounds = [state.end for state in parse_response(text).states[:steps]]
    segments = token_segments(token_ids, decode, bounds)
    return token_advantages(advantages, sample_token_steps(segments, len(bounds), steps))


class BiLevelGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are Bi-Level GRPO's, per token (see the module docstring).
    ``mode``: ``terminal`` | ``step`` | ``bilevel``; ``lam``: weight of the intra-trajectory term."""

    def __init__(self, *args, reward: SandboxReward, mode: str = "bilevel", lam: float = 0.3,
                 reproducible_rollouts: bool = False, record_to: Path | None = None, shared_prefill: bool = True,
                 bf16_rollout: bool = True, packed_rollout_weights: bool = True,
                 inverse_cdf_sampling: bool = True, lean_decode: bool = True, **kwargs):
        super().__init__(*args, reward_funcs=[reward], **kwargs)
        self.step_reward = reward
        self.advantage_mode = mode
        self.lam = lam
        self.reproducible_rollouts = reproducible_rollouts
        self.record_to = Path(record_to) if record_to else None
        self.shared_prefill = shared_prefill
        self.inverse_cdf_sampling = inverse_cdf_sampling
        self.lean_decode = lean_decode
        self.decode_loops = collections.Counter()  # which loop decoded each rollout: lean or generate
        # fp32 weights under bf16 autocast (a CPU): roll out from a bf16 copy (fast_path.BF16RolloutCopy);
        # not from sharded weights (FSDP, DeepSpeed), whose copy would hold only this rank's shard
        sharded = getattr(self, "is_fsdp_enabled", False) or getattr(self, "is_deepspeed_enabled", False)
        self.rollout_copy = (BF16RolloutCopy(pack=packed_rollout_weights) if bf16_rollout and not sharded
                             and wants_bf16_rollout(self.model, self.args.bf16) else None)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self.use_vllm or images is not None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        with contextlib.ExitStack() as stack:
            generator = self.accelerator.unwrap_model(self.model_wrapped)
            if self.rollout_copy is not None:
                generator = stack.enter_context(self.rollout_copy.generating(generator))
                # inside sharing_prefill's wrapper: the lean loop continues from the shared prefill
                stack.enter_context(lean_decoding(generator, self.lean_decode, self.decode_loops))
            if self.shared_prefill and not self.reproducible_rollouts:
                stack.enter_context(sharing_prefill(generator, num_generations))
            stack.enter_context(inverse_cdf_sampling(self.inverse_cdf_sampling))
            if not self.reproducible_rollouts:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations,
                                                     has_tool_images)
            return self._generate_one_prompt_at_a_time(prompt_ids, multimodal_fields, num_generations)

    def _generate_one_prompt_at_a_time(self, prompt_ids, multimodal_fields, num_generations):
        first = self.accelerator.process_index * len(prompt_ids)  # this rank's rows in the global batch
        completions, logprobs = [], []
        for index, ids in enumerate(prompt_ids):
            torch.manual_seed(rollout_seed(self.args.seed, self.state.global_step, first + index))
            one, one_logprobs = super()._generate_single_turn([ids], None, multimodal_fields, num_generations)
            completions += list(one)
            logprobs = None if one_logprobs is None or logprobs is None else logprobs + list(one_logprobs)
        return completions, logprobs

    def _generate(self, prompts):
        started = time.perf_counter()  # the rollout (transformers generate or vLLM), timed for the curves
        result = super()._generate(prompts)
        self._metrics["train" if self.model.training else "eval"]["time/rollout_s"].append(time.perf_counter() - started)
        return result

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        started = time.perf_counter()
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        local = self.step_reward.last
        # Groups may straddle processes (TRL gathers rewards for the same reason): gather the verdicts.
        everyone = gather_object(local)
        advantages: list[np.ndarray] = []
        for start in range(0, len(everyone), group):
            advantages += group_token_advantages(everyone[start : start + group], self.advantage_mode, self.lam)
        offset = self.accelerator.process_index * len(local)
        ids, mask = output["completion_ids"], output["completion_mask"]
        table = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        decode = lambda part: self.processing_class.decode(part, skip_special_tokens=True)
        for row in range(ids.size(0)):
            length = int(mask[row].sum().item())
            tokens = ids[row, :length].tolist()
            values = per_token(advantages[offset + row], decode(tokens), tokens, decode)
            table[row, :length] = torch.as_tensor(values, dtype=torch.float32)
        output["advantages"] = table
        if self.record_to is not None:
            self._record(inputs, local, offset, ids, mask, table, decode)
        metrics = self._metrics[mode]
        pooled = step_accuracy(everyone)
        if pooled is not None:
            metrics["step_accuracy"].append(pooled)
        metrics["final_accuracy"].append(float(np.mean([v.final_reward for v in everyone])))
        prompt_lengths = self.accelerator.gather(output["prompt_mask"].sum(dim=1))  # every rank's, as TRL's lengths
        metrics["prompt_length"].append(float(prompt_lengths.float().mean().item()))
        metrics["time/reward_s"].append(self.step_reward.seconds)
        metrics["time/advantages_s"].append(time.perf_counter() - started)
        return output

    def _record(self, inputs, verdicts, offset, ids, mask, table, decode) -> None:
        """One JSON line per local completion: where it sits in the global batch, its text and
        tokens, its verdict and the advantage of each of its tokens."""
        self.record_to.mkdir(parents=True, exist_ok=True)
        with open(self.record_to / f"rank{self.accelerator.process_index}.jsonl", "a") as out:
            for row, verdict in enumerate(verdicts):
                length = int(mask[row].sum().item())
                tokens = ids[row, :length].tolist()
                out.write(json.dumps({
                    "step": self.state.global_step, "rank": self.accelerator.process_index, "index": offset + row,
                    "task_id": inputs[row].get("task_id"),
                    "completion": decode(tokens), "completion_ids": tokens, "step_rewards": list(verdict.step_rewards),
                    "final_reward": verdict.final_reward, "advantages": table[row, :length].tolist(),
                }) + "\n")


def rollout_seed(seed: int, step: int, index: int) -> int:
    """The sampling seed of one completion: a function of its place in the global batch only."""
    return (seed * 1_000_003 + step * 10_007 + index) % 2**31
