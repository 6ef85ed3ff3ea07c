"""Rollout throughput: transformers ``generate`` against vLLM, same model, same prompts, one run.

Prompts are output-prediction tasks (the training prompt format) on programs from the built-in
generator, traced in the sandbox; each engine samples ``--samples`` completions per prompt at
temperature 1 with up to ``--max-tokens`` new tokens. Generated tokens are counted with the model's
tokenizer on the returned texts; tokens/s = generated tokens / wall time of ``generate`` (the model
load is timed apart). Where vLLM is not installed the vLLM part prints one "skipped" line.

Usage: python benchmarks/bench_rollout.py [--model DIR] [--prompts 8] [--samples 4] [--max-tokens 128]
       [--batch-size 32] [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stepcode_core.data.generator import generate_programs  # noqa: E402
from stepcode_core.data.tasks import output_prompt  # noqa: E402
from stepcode_core.models import SamplingConfig, TransformersEngine, vllm_available  # noqa: E402
from stepcode_core.tracing.anchors import instrument  # noqa: E402
from stepcode_core.training.modeling import resolve_model  # noqa: E402


def prompts_for(count: int) -> list[str]:
    programs = generate_programs(count, seed=7)
    return [output_prompt(instrument(p.code).code, "f", p.input) for p in programs]


def measure(engine, prompts: list[str], sampling: SamplingConfig, tokenizer) -> dict:
    started = time.perf_counter()
    texts = engine.generate(prompts, sampling)
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for group in texts for text in group)
    return {"seconds": round(seconds, 2), "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per transformers generate call")
    parser.add_argument("--quick", action="store_true", help="2 prompts x 1 sample x 8 tokens (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.samples, args.max_tokens = 2, 1, 8

    model_dir = resolve_model(args.model)
    prompts = prompts_for(args.prompts)
    sampling = SamplingConfig(max_new_tokens=args.max_tokens, temperature=1.0, num_samples=args.samples, seed=0,
                              batch_size=args.batch_size)
    figures = {"quick": args.quick, "model": str(model_dir), "prompts": len(prompts), "samples": args.samples, "max_tokens": args.max_tokens}

    started = time.perf_counter()
    engine = TransformersEngine(model_dir)
    figures["transformers_load_s"] = round(time.perf_counter() - started, 2)
    figures["device"] = engine.device
    transformers_run = measure(engine, prompts, sampling, engine.tokenizer)
    figures.update({f"transformers_{k}": v for k, v in transformers_run.items()})
    print(f"transformers generate: {transformers_run}")
    del engine

    if vllm_available():
        from stepcode_core.models import VLLMEngine

        started = time.perf_counter()
        engine = VLLMEngine(model_dir)
        figures["vllm_load_s"] = round(time.perf_counter() - started, 2)
        vllm_run = measure(engine, prompts, sampling, engine.tokenizer)
        figures.update({f"vllm_{k}": v for k, v in vllm_run.items()})
        figures["vllm_vs_transformers"] = round(vllm_run["tokens_per_s"] / transformers_run["tokens_per_s"], 2)
        print(f"vllm: {vllm_run}")
    else:
        figures["vllm"] = "skipped: vllm not installed"
        print("vllm: skipped: vllm not installed")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
