"""The roofline of a training step: what the machine can do, measured in the same run, and the least
a step must do, so that a benchmark prints measured ÷ bound for the rollout, the update and the step.

The machine (:func:`measure_machine`): the GEMM rate of each dtype (the best of a few square
``torch.mm``), the memory bandwidth (bytes read and written by a large tensor copy), the CPU's name
and whether it has bf16 instructions. The step (:class:`ModelShape` and the bounds), counted as the
least work it needs, at the rate of the dtype it computes in:

- rollout: each distinct prompt prefilled once (FLOPs); every decode step reads the weights, each
  generated token reads its KV cache; the longest response sets the number of decode steps; the
  bound is the larger of the FLOPs at the GEMM rate and the bytes at the bandwidth.
- update: forward of every real token (no padding) through all layers, the LM head on the scored
  tokens only; backward twice the forward FLOPs of the trained layers, plus the LM head's input
  gradient; AdamW reading and writing the trained parameters' fp32 state (28 bytes each) at the
  bandwidth.

Hand-written because profilers count what a step did, not what it had to do: a step that projects
the prompt through the LM head for nothing still looks busy to them. ``tests/core/test_roofline.py``
checks the FLOP counts against ``torch.utils.flop_counter`` on a real forward.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from stepcode_core.models import cpu_supports_bf16

ADAMW_BYTES_PER_PARAMETER = 28  # fp32: parameter, gradient, two moments read; parameter, two moments written


@dataclass(frozen=True)
class Machine:
    name: str
    device: str  # cpu | cuda
    threads: int
    gemm_gflops: dict[str, float] = field(default_factory=dict)  # dtype name -> GFLOP/s
    bandwidth_gbs: float = 0.0  # bytes read + written per second, GB/s
    bf16_instructions: bool = False

    def describe(self) -> str:
        rates = ", ".join(f"{dtype} GEMM {rate:,.0f} GFLOP/s" for dtype, rate in self.gemm_gflops.items())
        extra = "" if self.device != "cpu" else (", bf16 instructions" if self.bf16_instructions else ", no bf16 instructions")
        return f"{self.name} ({self.threads} threads{extra}): {rates}, memory {self.bandwidth_gbs:.1f} GB/s"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def best_seconds(run, repeats: int) -> float:
    """The best of ``repeats`` timings of ``run`` after one warm-up call."""
    run()  # warm-up: allocation and kernel selection
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def measure_machine(device: str = "cpu", gemm_size: int = 2048, copy_mb: int = 256, repeats: int = 3) -> Machine:
    """GEMM rates (float32, bfloat16) and memory bandwidth of ``device``, with the threads torch uses."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        # Grow the square until one product takes ~0.1 s: a dtype the CPU emulates (bf16 without the
        # instructions runs at well under 1 GFLOP/s) is measured in seconds, not minutes.
        size = min(256, gemm_size)
        while True:
            a = torch.randn(size, size, device=device).to(dtype)
            b = torch.randn(size, size, device=device).to(dtype)

            def mm(a=a, b=b):
                torch.mm(a, b)
                sync()

            seconds = best_seconds(mm, repeats)
            if size >= gemm_size or seconds > 0.1:
                break
            size *= 2
        rates[str(dtype).removeprefix("torch.")] = 2 * size**3 / seconds / 1e9
    source = torch.empty(copy_mb * 2**20 // 4, device=device)
    target = torch.empty_like(source)

    def copy():
        target.copy_(source)
        sync()

    bandwidth = 2 * source.numel() * 4 / best_seconds(copy, repeats + 2) / 1e9
    name = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
    return Machine(name=name, device=device, threads=torch.get_num_threads(), gemm_gflops=rates,
                   bandwidth_gbs=bandwidth, bf16_instructions=device == "cuda" or cpu_supports_bf16())


@dataclass(frozen=True)
class ModelShape:
    """What a decoder-only transformer's cost depends on (a Llama-style block: attention with grouped
    key/value heads and a gated MLP)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool = True

    @classmethod
    def from_config(cls, config) -> ModelShape:
        heads = config.num_attention_heads
        return cls(layers=config.num_hidden_layers, hidden=config.hidden_size, intermediate=config.intermediate_size,
                   heads=heads, kv_heads=getattr(config, "num_key_value_heads", None) or heads,
                   head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
                   vocab=config.vocab_size, tied=bool(getattr(config, "tie_word_embeddings", False)))

    @property
    def layer_parameters(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)  # q, o; k, v
        return attention + 3 * self.hidden * self.intermediate  # gate, up, down

    @property
    def parameters(self) -> int:
        return self.layers * self.layer_parameters + self.vocab * self.hidden * (1 if self.tied else 2)

    def sequence_flops(self, length: int, layers: int | None = None) -> float:
        """Forward FLOPs of one sequence of ``length`` tokens through ``layers`` decoder layers (all by
        default), causal attention included, the LM head excluded."""
        layers = self.layers if layers is None else layers
        dense = 2 * self.layer_parameters * length
        attention = 2 * self.heads * self.head_dim * length * length  # QK^T and AV over the causal half
        return float(layers * (dense + attention))

    def lm_head_flops(self, tokens: int) -> float:
        return 2.0 * self.hidden * self.vocab * tokens

    def kv_bytes_per_token(self, bytes_per_value: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * bytes_per_value


@dataclass(frozen=True)
class Bound:
    flops: float
    bytes: float
    seconds: float


def _seconds(flops: float, bytes_: float, gflops: float, bandwidth_gbs: float) -> float:
    return max(flops / (gflops * 1e9), bytes_ / (bandwidth_gbs * 1e9))


def rollout_bound(shape: ModelShape, prompt_lengths: list[int], response_lengths: list[int], gflops: float,
                  bandwidth_gbs: float, bytes_per_value: int) -> Bound:
    """``prompt_lengths``: the distinct prompts (each prefilled once); ``response_lengths``: every
    sampled response, each after a prompt of the mean length."""
    mean_prompt = sum(prompt_lengths) / max(len(prompt_lengths), 1)
    prefill = sum(shape.sequence_flops(length) for length in prompt_lengths) + shape.lm_head_flops(len(prompt_lengths))
    generated = sum(response_lengths)
    per_token = 2 * shape.layers * shape.layer_parameters + shape.lm_head_flops(1)
    attention = sum(4 * shape.layers * shape.heads * shape.head_dim * (mean_prompt + length / 2) * length
                    for length in response_lengths)
    kv_reads = sum(shape.kv_bytes_per_token(bytes_per_value) * (mean_prompt + length / 2) * length
                   for length in response_lengths)
    # Per decode step: every layer and the LM head (an untied input embedding is only gathered from)
    weight_reads = max(response_lengths, default=0) * (shape.layers * shape.layer_parameters
                                                       + shape.vocab * shape.hidden) * bytes_per_value
    flops = prefill + generated * per_token + attention
    bytes_ = weight_reads + kv_reads
    return Bound(flops, bytes_, _seconds(flops, bytes_, gflops, bandwidth_gbs))


def update_bound(shape: ModelShape, sequence_lengths: list[int], scored_tokens: int, trained_layers: int,
                 trained_parameters: int, gflops: float, bandwidth_gbs: float, lm_head_trained: bool = False) -> Bound:
    """One forward and backward over the sequences (their real tokens) and the optimizer's step."""
    forward = sum(shape.sequence_flops(length) for length in sequence_lengths) + shape.lm_head_flops(scored_tokens)
    backward = 2 * sum(shape.sequence_flops(length, trained_layers) for length in sequence_lengths)
    backward += shape.lm_head_flops(scored_tokens) * (2 if lm_head_trained else 1)
    flops = forward + backward
    optimizer_bytes = ADAMW_BYTES_PER_PARAMETER * trained_parameters
    seconds = flops / (gflops * 1e9) + optimizer_bytes / (bandwidth_gbs * 1e9)
    return Bound(flops, optimizer_bytes, seconds)


def ratio_table(rows: list[tuple[str, float, float]]) -> str:
    """``(part, measured s, bound s)`` rows as aligned text, with measured ÷ bound."""
    lines = [f"{'part':<10} {'measured s':>11} {'bound s':>9} {'measured/bound':>15}"]
    for part, measured, bound in rows:
        ratio = measured / bound if bound else float("nan")
        lines.append(f"{part:<10} {measured:>11.2f} {bound:>9.2f} {ratio:>15.1f}")
    return "\n".join(lines)
