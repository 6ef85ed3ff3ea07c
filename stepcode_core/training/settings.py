"""Training settings: one flat :class:`TrainSettings`, the presets, and what a training run returns.

:data:`PRESETS` holds ``cpu-demo`` (the default: SmolLM2-135M learns the easy levels on a 2-core CPU
in minutes), ``cpu-smoke`` (a few steps that prove the graph runs; the base of the tests' settings),
``tiny-ablation`` (the ablation in miniature: a tiny Llama on the tiny trace task) and ``paper``
(Qwen2.5-Coder-7B-Instruct, G = 5, lr 1e-6, responses up to 4096 tokens, λ = 0.3, bf16, vLLM
rollouts): the paper's settings, with our choices where the paper is silent.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stepcode_core.training.advantages import MODES

Progress = Callable[[str, int, int, dict], None]  # (phase, step, total steps, logged numbers)


@dataclass(frozen=True)
class TrainSettings:
    name: str = "custom"
    model: str = "embedded"  # "embedded", a local Hugging Face folder, or a hub id (where the network allows)
    seed: int = 0
    bf16: bool = False  # GPU: bf16 weights; CPU with bf16 instructions: bf16 autocast over fp32 weights
    rollout: str = "auto"  # auto (vLLM when installed and a GPU is present) | transformers | vllm
    lora: bool = False  # train a LoRA adapter (peft), merged into the saved checkpoint
    lora_rank: int = 16
    lora_alpha: int = 32
    train_top_layers: int = 0  # > 0: train only the top N decoder layers (and the final norm); a CPU-time knob
    gradient_checkpointing: bool = False
    tasks: str = "output,input"  # task kinds trained on
    # SFT warm start
    sft_epochs: float = 1.0
    sft_learning_rate: float = 5e-5
    sft_batch_size: int = 8  # sequences per optimizer step, over all processes
    sft_micro_batch: int = 0  # sequences per forward/backward on one process; 0: its whole share at once
    sft_max_length: int = 1024
    sft_max_tasks: int = 0  # 0: every training task
    # Bi-Level GRPO
    grpo_steps: int = 0  # optimizer steps; 0: grpo_epochs over the tasks
    grpo_epochs: float = 1.0
    grpo_prompts_per_step: int = 2  # prompts per optimizer step, over all processes (x G sequences)
    grpo_num_generations: int = 4  # G
    grpo_micro_batch: int = 0  # sequences per forward/backward on one process; 0: its whole share at once
    grpo_learning_rate: float = 1e-6
    grpo_max_response_tokens: int = 256
    grpo_temperature: float = 1.0
    grpo_top_p: float = 1.0
    grpo_mode: str = "bilevel"  # terminal | step | bilevel
    grpo_lambda: float = 0.3
    grpo_beta: float = 0.0  # KL coefficient; 0: no reference model (TRL's default)
    grpo_epsilon: float = 0.2  # clip range of the ratio
    # DAPO's overlong filtering (TRL's mask_truncated_completions): a completion cut at the token limit
    # gets no gradient. Step rewards do not punish states past the trace, so without it a policy can
    # learn to run on past its answer until it is cut, and lose the final reward.
    grpo_mask_truncated: bool = True
    grpo_max_tasks: int = 0  # 0: every training task
    # Each completion sampled alone with a seed of its own (seed, step, global index): the same rollouts
    # whatever the number of processes, at the price of batching (transformers rollouts only). For
    # checking a distributed run against a single-process one.
    grpo_reproducible_rollouts: bool = False
    grpo_record_rollouts: bool = False  # write every completion, its verdict and its per-token advantages
    verify_timeout_s: float = 3.0
    vllm_gpu_memory_utilization: float = 0.3
    # held-out evaluation after training
    eval_tasks: int = 16
    eval_max_tokens: int = 256
    eval_num_samples: int = 1  # responses per held-out prompt
    eval_temperature: float = 0.0  # 0: greedy; the ablation samples at the training temperature
    torch_threads: int = 0  # > 0: torch threads of each training process (a tiny model runs fastest on one)
    # PyTorch's and MKL's portable kernels (stepcode_core.training.numerics): the same weights on any
    # x86 CPU, about 15% slower
    portable_kernels: bool = False
    # The fast path (stepcode_core.training.fast_path); off only to measure what each change wins
    compact_lm_head: bool = True  # the LM head projects only the scored positions on a CPU too
    shared_prefill: bool = True  # GRPO rollouts prefill each prompt once for its G samples (transformers)
    bf16_rollout: bool = True  # bf16 autocast over fp32 weights (a CPU): GRPO rolls out from a bf16 copy
    packed_rollout_weights: bool = True  # the bf16 copy's linear layers in oneDNN's packed layout
    inverse_cdf_sampling: bool = True  # rollouts draw each token by inverse CDF (one uniform a row, on a CPU)
    lean_decode: bool = True  # the bf16 copy of a Llama-style policy decodes by lean_decode's loop, not generate's

    def replace(self, **overrides) -> TrainSettings:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        settings = dataclasses.replace(self, **overrides)
        if settings.grpo_mode not in MODES:
            raise ValueError(f"grpo_mode must be one of {', '.join(MODES)}, got {settings.grpo_mode!r}")
        if settings.rollout not in ("auto", "transformers", "vllm"):
            raise ValueError(f"rollout must be auto, transformers or vllm, got {settings.rollout!r}")
        return settings

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainSettings] = {
    # The demo: SFT that measurably teaches SmolLM2-135M to trace levels 1-2 (README, "the demo"), then
    # GRPO on 192 rollouts (12 steps of 4 prompts x G=4), what the fast path's time buys, at lr 5e-5 (1e-5
    # moved the held-out numbers by less than their noise; docs/results.md has what was tried). bf16 autocast
    # where the CPU has the instructions (~1.7x a step); the top 12 of 30 layers trained (the backward
    # pass stops there); the held-out scoring is eval_trace_gap's.
    "cpu-demo": TrainSettings(
        name="cpu-demo", model="embedded", bf16=True, train_top_layers=12,
        sft_epochs=1.0, sft_learning_rate=4e-4, sft_batch_size=8, sft_max_length=512, sft_max_tasks=512,
        grpo_steps=12, grpo_prompts_per_step=4, grpo_num_generations=4, grpo_learning_rate=5e-5,
        grpo_max_response_tokens=96, grpo_max_tasks=48, eval_tasks=0, eval_max_tokens=96,
        # The README's demo and real-model ablation were measured before the lean decode loop: it samples
        # the same distributions along other rounding, so turning it on here would change their figures.
        lean_decode=False,
    ),
    # Runs end to end on 2 CPU cores in a few minutes: a handful of SFT and GRPO steps that prove the
    # graph works, not a model worth evaluating. Training only the top layers cuts the backward pass.
    "cpu-smoke": TrainSettings(
        name="cpu-smoke", model="embedded", train_top_layers=4,
        sft_epochs=1.0, sft_learning_rate=1e-4, sft_batch_size=8, sft_max_length=768, sft_max_tasks=32,
        grpo_steps=3, grpo_prompts_per_step=2, grpo_num_generations=4, grpo_learning_rate=1e-5,
        grpo_max_response_tokens=128, grpo_max_tasks=32, eval_tasks=6, eval_max_tokens=160,
    ),
    # The ablation in miniature (the `ablation` job): a 2-layer, 128-wide Llama with a 400-token BPE,
    # warm-started by SFT until copying values is half learned, then 100 GRPO steps per mode and seed,
    # the held-out reward sampled at the training temperature (what GRPO optimizes). The values of the
    # learning test (tests/core/test_learning.py), where they were measured.
    "tiny-ablation": TrainSettings(
        name="tiny-ablation", model="tiny", train_top_layers=0, torch_threads=1, portable_kernels=True,
        sft_epochs=17.0, sft_learning_rate=3e-3, sft_batch_size=32, sft_max_tasks=0,
        grpo_steps=100, grpo_prompts_per_step=4, grpo_num_generations=8, grpo_learning_rate=3e-4,
        grpo_max_response_tokens=64, grpo_temperature=1.0, grpo_max_tasks=0, tasks="output",
        eval_tasks=64, eval_max_tokens=64, eval_num_samples=4, eval_temperature=1.0,
        # the path its documented numbers were measured on
        compact_lm_head=False, shared_prefill=False, bf16_rollout=False, packed_rollout_weights=False,
        inverse_cdf_sampling=False, lean_decode=False,
    ),
    # The paper's settings (Qwen2.5-Coder-7B, SFT then GRPO, G = 5, lr 1e-6, responses up to 4096 tokens,
    # 2 epochs, on 8 GPUs with verl). The KL coefficient and batch shape are our choices where the
    # paper is silent: beta = 0.001 (verl's kl_loss_coef default), 32 prompts x G per step.
    "paper": TrainSettings(
        name="paper", model="Qwen/Qwen2.5-Coder-7B-Instruct", bf16=True, rollout="vllm", gradient_checkpointing=True,
        sft_epochs=2.0, sft_learning_rate=1e-5, sft_batch_size=32, sft_micro_batch=4, sft_max_length=6144,
        grpo_epochs=2.0, grpo_prompts_per_step=32, grpo_num_generations=5, grpo_micro_batch=4,
        grpo_learning_rate=1e-6, grpo_max_response_tokens=4096, grpo_lambda=0.3, grpo_beta=0.001,
        eval_tasks=256, eval_max_tokens=4096, vllm_gpu_memory_utilization=0.3,
    ),
}


def batch_shape(sequences: int, micro_batch: int, processes: int, name: str = "batch") -> tuple[int, int]:
    """(per-process micro batch, gradient accumulation steps) for ``sequences`` per optimizer step
    split over ``processes``: the same global batch, hence the same update, on 1 GPU or 8."""
    if sequences % processes:
        raise ValueError(f"{name}: {sequences} sequences per step do not split over {processes} processes")
    share = sequences // processes
    micro = micro_batch or share
    if share % micro:
        raise ValueError(f"{name}: the micro batch ({micro}) must divide each process's {share} sequences per step")
    return micro, share // micro


def parse_overrides(items: list[str]) -> dict:
    """TrainSettings fields from ``KEY=VALUE`` strings (a command line's ``--set``): a value is JSON
    when it parses (1e-6, true, 8), else the string itself."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def preset(name: str, **overrides) -> TrainSettings:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


@dataclass
class TrainingResult:
    checkpoint_dir: Path  # Hugging Face folder: weights, config, tokenizer
    curves: list[dict] = field(default_factory=list)  # one dict per logged optimizer step
    metrics: dict = field(default_factory=dict)  # final numbers (runtime, last values)
