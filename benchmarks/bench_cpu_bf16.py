"""bf16 autocast on the CPU against fp32, for what the demo does on a CPU: greedy generation and a
training step (forward and backward of one batch) of the embedded model, same inputs, one run.

The claim it checks: on a CPU with bf16 instructions (AVX512-BF16 or AMX; ``cpu_supports_bf16``),
``torch.autocast("cpu", dtype=torch.bfloat16)`` over fp32 weights, which ``TransformersEngine`` and
the trainers' ``bf16`` flag switch on there, takes a fraction of the fp32 time. Without those
instructions bf16 is emulated and slower: the script still runs and prints the ratio. Each figure is
the best of ``--repeats`` timings after one warm-up, so the shared machine's noise inflates neither side.

Usage: python benchmarks/bench_cpu_bf16.py [--model DIR] [--prompts 16] [--max-tokens 64]
       [--batch 8] [--repeats 3] [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from stepcode_core.data.generator import generate_programs  # noqa: E402
from stepcode_core.data.tasks import output_prompt  # noqa: E402
from stepcode_core.models import SamplingConfig, TransformersEngine, cpu_supports_bf16  # noqa: E402
from stepcode_core.tracing.anchors import instrument  # noqa: E402
from stepcode_core.training.modeling import resolve_model  # noqa: E402
from stepcode_core.training.roofline import best_seconds  # noqa: E402


def prompts_for(count: int) -> list[str]:
    return [output_prompt(instrument(p.code).code, "f", p.input) for p in generate_programs(count, seed=11)]


def generation_seconds(engine: TransformersEngine, prompts: list[str], max_tokens: int, bf16: bool, repeats: int) -> float:
    engine.cpu_bf16 = bf16
    sampling = SamplingConfig(max_new_tokens=max_tokens, temperature=0.0, num_samples=1, batch_size=len(prompts))
    return best_seconds(lambda: engine.generate(prompts, sampling), repeats)


def training_step_seconds(engine: TransformersEngine, prompts: list[str], batch: int, bf16: bool, repeats: int) -> float:
    """Forward and backward of one batch of chat-formatted prompts (the language-modelling loss on
    every token), as the SFT trainer's step does it, gradients dropped after each."""
    model = engine.model.train()
    texts = [engine.chat_text(prompt) for prompt in prompts[:batch]]
    inputs = engine.tokenizer(texts, return_tensors="pt", padding=True)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    try:
        return best_seconds(step, repeats)
    finally:
        model.eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="sequences in the training step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 prompts, 4 tokens, a batch of 2, one timing (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_tokens, args.batch, args.repeats = 2, 4, 2, 1

    engine = TransformersEngine(resolve_model(args.model), device="cpu", cpu_bf16=False)
    prompts = prompts_for(args.prompts)
    figures = {"quick": args.quick, "model": str(resolve_model(args.model)), "cpu_has_bf16_instructions": cpu_supports_bf16(),
               "threads": torch.get_num_threads(), "prompts": len(prompts), "max_tokens": args.max_tokens,
               "batch": args.batch, "repeats": args.repeats}
    for what, measure, size in (("generation", generation_seconds, args.max_tokens),
                                ("training_step", training_step_seconds, args.batch)):
        fp32 = measure(engine, prompts, size, False, args.repeats)
        bf16 = measure(engine, prompts, size, True, args.repeats)
        figures.update({f"{what}_fp32_s": round(fp32, 2), f"{what}_bf16_s": round(bf16, 2),
                        f"{what}_bf16_vs_fp32": round(bf16 / fp32, 2)})
        print(f"{what}: fp32 {fp32:.2f} s, bf16 autocast {bf16:.2f} s, ratio {bf16 / fp32:.2f}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
