"""One SFT step (the demo's warm start) against the machine's roofline: the step's time divided by
the least time the machine needs for its forward, backward and optimizer step.

Runs :func:`stepcode_core.training.sft.run_sft` (TRL SFTTrainer, real model) for ``--steps`` optimizer
steps of ``--batch`` sequences and reports the mean step after the first. The token counts come from
the same chat template TRL applies (prompt, response, truncated at ``sft_max_length``); the bound
(:func:`stepcode_core.training.roofline.update_bound`) counts the real tokens forward, the scored
(response) tokens through the LM head, and the backward of the trained layers. ``--fast-path`` also
runs the plain path (TRL's LM head over every position) and prints the speed-up of the compact LM
head over it; the loss curves of the two must agree.

Usage: python benchmarks/bench_sft.py [--model DIR] [--preset cpu-demo] [--tasks tiny|DATASET_DIR]
       [--steps 4] [--batch 8] [--fast-path] [--quick]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import open_sandbox  # noqa: E402
from stepcode_core.training.curves import mean_step_seconds  # noqa: E402
from stepcode_core.training.modeling import mixed_precision_bf16, resolve_model  # noqa: E402
from stepcode_core.training.roofline import (  # noqa: E402
    ModelShape,
    measure_machine,
    ratio_table,
    update_bound,
)
from stepcode_core.training.settings import preset  # noqa: E402
from stepcode_core.training.sft import run_sft  # noqa: E402
from stepcode_core.training.tasks import load_tasks, messages, select_tasks  # noqa: E402
from stepcode_core.training.tiny_task import tiny_task_rows  # noqa: E402


def token_counts(tokenizer, rows: list[dict], max_length: int) -> list[tuple[int, int]]:
    """(real tokens, response tokens) of each SFT example, as TRL's chat template tokenizes it."""
    counts = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(messages(row["prompt"]), add_generation_prompt=True, tokenize=True)
        whole = tokenizer.apply_chat_template(messages(row["prompt"]) + [{"role": "assistant", "content": row["reference"]}],
                                              tokenize=True)
        prompt, whole = len(getattr(prompt, "input_ids", prompt)), len(getattr(whole, "input_ids", whole))
        total = min(whole, max_length)
        counts.append((total, max(total - prompt, 0)))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="Hugging Face folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--tasks", default="tiny", help="'tiny' (the small trace task) or a trace_dataset artifact folder")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="sequences per optimizer step")
    parser.add_argument("--fast-path", action="store_true", help="also time the plain path (LM head over every position)")
    parser.add_argument("--quick", action="store_true", help="2 steps of 2 sequences (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.batch = 2, 2

    import torch
    from transformers import AutoConfig, AutoTokenizer

    model_dir = resolve_model(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = measure_machine(device, gemm_size=256 if args.quick else 2048, copy_mb=16 if args.quick else 256)
    print(f"machine: {machine.describe()}", flush=True)
    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_dir))
    base = preset(args.preset, sft_max_tasks=args.steps * args.batch, sft_epochs=1.0, sft_batch_size=args.batch,
                  sft_micro_batch=0)
    if args.tasks == "tiny":
        with open_sandbox(backend="auto") as sandbox:
            tasks = tiny_task_rows(max(args.steps * args.batch, 8), 0, sandbox)
    else:
        tasks = load_tasks(args.tasks, "train")
    chosen = select_tasks(tasks, base.tasks, base.sft_max_tasks, base.seed)
    counts = token_counts(AutoTokenizer.from_pretrained(model_dir), chosen, base.sft_max_length)
    steps = len(chosen) // args.batch
    if steps < 1:
        parser.error(f"{len(chosen)} tasks make no step of {args.batch} sequences: lower --batch or give more tasks")
    real, scored = sum(c[0] for c in counts) / steps, sum(c[1] for c in counts) / steps
    trained_layers = base.train_top_layers or shape.layers
    trained_parameters = trained_layers * shape.layer_parameters if base.train_top_layers else shape.parameters
    dtype = "bfloat16" if mixed_precision_bf16(base) else "float32"
    example_lengths = [c[0] for c in counts[: args.batch]]
    bound = update_bound(shape, [round(real / args.batch)] * args.batch, round(scored), trained_layers, trained_parameters,
                         machine.gemm_gflops[dtype], machine.bandwidth_gbs, lm_head_trained=not base.train_top_layers)

    stages = (("plain", {"compact_lm_head": False}), ("+ compact LM head", {"compact_lm_head": True})) if args.fast_path \
        else (("default", {}),)
    results = []
    for name, overrides in stages:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = run_sft(model_dir, chosen, Path(folder) / "model", base.replace(**overrides))
        seconds = mean_step_seconds(result.curves)
        results.append({"stage": name, "step_s": seconds, "total_s": time.perf_counter() - started,
                        "losses": [row.get("loss") for row in result.curves]})
        print(f"\n{name}: {seconds:.2f} s a step ({args.batch} sequences, ~{real:.0f} real tokens of which "
              f"~{scored:.0f} scored, {dtype})")
        print(ratio_table([("step", seconds, bound.seconds)]), flush=True)
    if args.fast_path:
        plain, fast = results
        agree = all(abs(a - b) <= 1e-3 * max(1.0, abs(a)) for a, b in zip(plain["losses"], fast["losses"]))
        # The first step starts from the same weights: its loss must agree whatever the dtype. Later
        # steps follow updates that differ by rounding, which bf16 autocast makes visible.
        first = abs(plain["losses"][0] - fast["losses"][0]) <= 1e-3 * max(1.0, abs(plain["losses"][0]))
        drift = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(plain["losses"], fast["losses"]))
        print(f"\ncompact LM head: x{plain['step_s'] / fast['step_s']:.2f} a step; losses agree with the plain path: "
              f"{'yes' if agree else 'NO'} ({fast['losses']} vs {plain['losses']})")
        print(f"first step's loss as plain: {'yes' if first else 'NO'}; largest relative difference over the "
              f"{len(plain['losses'])} steps: {drift:.1%} ({dtype})")
    summary = {
        "quick": args.quick, "model": str(model_dir), "machine": machine.name, "device": device,
        "torch_threads": machine.threads, "gemm_gflops": {k: round(v, 1) for k, v in machine.gemm_gflops.items()},
        "bandwidth_gbs": round(machine.bandwidth_gbs, 1), "dtype": dtype, "batch": args.batch, "steps": steps,
        "tokens_per_step": round(real), "scored_tokens_per_step": round(scored), "example_lengths": example_lengths,
        "bound_s": round(bound.seconds, 3), "stages": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                                                        for r in results],
        "step_over_bound": round(results[-1]["step_s"] / bound.seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
