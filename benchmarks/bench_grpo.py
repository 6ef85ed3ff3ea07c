"""One Bi-Level GRPO step against the machine's roofline: time and peak memory, split into rollout,
reward and update, each divided by the least time the machine needs for it.

Runs :func:`stepcode_core.training.grpo.run_grpo` (TRL GRPOTrainer subclass, real model, rewards verified
in the real sandbox) for ``--steps`` optimizer steps and reports the mean of the steps after the first
(the first pays one-off costs: allocator warm-up, first sandbox forks). The trainer times each part
itself: ``rollout`` is generation (transformers ``generate`` or vLLM), ``reward`` the sandboxed
verification, and ``update`` the rest of the step (log-probs, loss, backward, optimizer); the step is
the time from one logged step to the next.

In the same run it measures the machine (:func:`stepcode_core.training.roofline.measure_machine`:
GEMM rate per dtype, memory bandwidth) and prints measured ÷ bound for the rollout, the update and the
whole step (:mod:`stepcode_core.training.roofline` says what each bound counts), with every change of
the fast path on (:mod:`stepcode_core.training.fast_path` and :mod:`stepcode_core.training.lean_decode`,
whatever the preset says). ``--fast-path`` runs the step seven times, adding one change at a time
(plain, + compact LM head, + shared prefill, + bf16 rollout copy, + its weights packed, + inverse-CDF
sampling, + the lean decode loop), prints each one's speed-up over the plain path, and
checks that the rollouts stayed the same (same seed: the first step's response lengths and rewards
must match; later steps follow updates equal to float rounding).

Usage: python benchmarks/bench_grpo.py [--model DIR] [--preset cpu-demo] [--tasks tiny|DATASET_DIR]
       [--steps 3] [--prompts 2] [--generations 4] [--max-tokens 96] [--mode bilevel] [--fast-path] [--quick]
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
from stepcode_core.training.grpo import run_grpo  # noqa: E402
from stepcode_core.training.modeling import mixed_precision_bf16, resolve_model  # noqa: E402
from stepcode_core.training.roofline import (  # noqa: E402
    ModelShape,
    measure_machine,
    ratio_table,
    rollout_bound,
    update_bound,
)
from stepcode_core.training.settings import preset  # noqa: E402
from stepcode_core.training.tasks import load_tasks  # noqa: E402
from stepcode_core.training.tiny_task import tiny_task_rows  # noqa: E402

CHANGES = (("+ compact LM head", "compact_lm_head"), ("+ shared prefill", "shared_prefill"),
           ("+ bf16 rollout copy", "bf16_rollout"), ("+ packed weights", "packed_rollout_weights"),
           ("+ inverse-CDF sampling", "inverse_cdf_sampling"), ("+ lean decode loop", "lean_decode"))
PLAIN = {setting: False for _, setting in CHANGES}
FAST = {setting: True for _, setting in CHANGES}
# Each stage adds one change to the one before it.
FAST_PATH_STAGES = (("plain", PLAIN),) + tuple(
    (name, {**PLAIN, **{setting: True for _, setting in CHANGES[: index + 1]}}) for index, (name, _) in enumerate(CHANGES))


def _mean(rows: list[dict], key: str) -> float:
    values = [row.get(key, 0.0) for row in rows]
    return sum(values) / max(len(values), 1)


def rollout_engine(metrics: dict) -> str:
    """What decoded the rollouts: vLLM, transformers' ``generate``, or the lean loop (with how many
    of the step's generations fell back to ``generate``)."""
    if metrics.get("rollout") != "transformers":
        return str(metrics.get("rollout"))
    lean, fallback = metrics.get("rollout_lean_decodes", 0), metrics.get("rollout_generate_decodes", 0)
    if not lean:
        return "transformers generate"
    return "lean decode loop" + (f" ({fallback} of {lean + fallback} generations by generate)" if fallback else "")


def step_figures(curves: list[dict]) -> dict:
    """Mean timings and token counts of the steps after the first (all of them when there is one)."""
    rows = curves[1:] or curves
    # The step from one log to the next: TRL's step_time leaves out the optimizer, which the bound counts.
    step = mean_step_seconds(curves) if len(curves) > 1 else _mean(rows, "step_time_s")
    rollout, reward = _mean(rows, "rollout_s"), _mean(rows, "reward_s")
    advantages = _mean(rows, "advantages_s")
    return {
        "step_s": step, "rollout_s": rollout, "reward_s": reward, "advantages_s": advantages,
        "update_s": step - rollout - reward - advantages,
        "prompt_tokens": _mean(rows, "prompt_length"), "response_tokens": _mean(rows, "response_length"),
        "response_max_tokens": _mean(rows, "response_max_length"),
    }


def bounds(shape: ModelShape, machine, settings, figures: dict, prompts: int, generations: int) -> dict:
    """The rollout's, the update's and the step's bound (seconds) for the step's measured token counts."""
    sequences = prompts * generations
    dtype = "bfloat16" if mixed_precision_bf16(settings) else "float32"
    gflops = machine.gemm_gflops[dtype]
    # A bf16 step needs to read bf16 weights at each decode step (what the bf16 rollout copy reads on a
    # CPU, and the weights themselves on a GPU); fp32 weights read under autocast are the plain path's cost.
    weight_bytes = 2 if dtype == "bfloat16" else 4
    prompt, mean, longest = figures["prompt_tokens"], figures["response_tokens"], figures["response_max_tokens"]
    longest = max(longest, mean)
    rest = (sequences * mean - longest) / max(sequences - 1, 1)
    responses = [round(longest)] + [round(rest)] * (sequences - 1)
    rollout = rollout_bound(shape, [round(prompt)] * prompts, responses, gflops, machine.bandwidth_gbs, weight_bytes)
    if settings.lora:  # a LoRA step back-propagates through every layer but trains next to nothing
        trained_layers, trained_parameters, lm_head_trained = shape.layers, 0, False
    else:
        trained_layers = settings.train_top_layers or shape.layers
        trained_parameters = trained_layers * shape.layer_parameters if settings.train_top_layers else shape.parameters
        lm_head_trained = not settings.train_top_layers
    lengths = [round(prompt + length) for length in responses]
    update = update_bound(shape, lengths, sum(responses), trained_layers, trained_parameters, gflops,
                          machine.bandwidth_gbs, lm_head_trained=lm_head_trained)
    reference = 0.0  # beta > 0: the reference model's forward over the same sequences
    if settings.grpo_beta:
        reference = (sum(shape.sequence_flops(n) for n in lengths) + shape.lm_head_flops(sum(responses))) / (gflops * 1e9)
    return {"dtype": dtype, "rollout_bound_s": rollout.seconds, "update_bound_s": update.seconds + reference,
            "step_bound_s": rollout.seconds + update.seconds + reference}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="Hugging Face folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--preset", default="cpu-demo")
    parser.add_argument("--tasks", default="tiny", help="'tiny' (the small trace task) or a trace_dataset artifact folder")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="G")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--mode", default="bilevel")
    parser.add_argument("--rollout", default="auto")
    parser.add_argument("--fast-path", action="store_true", help="time the plain path and each fast-path change")
    parser.add_argument("--quick", action="store_true", help="one step of 1 prompt x 2 samples x 8 tokens (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.prompts, args.generations, args.max_tokens = 1, 1, 2, 8

    import torch
    from transformers import AutoConfig

    model_dir = resolve_model(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = measure_machine(device, gemm_size=256 if args.quick else 2048, copy_mb=16 if args.quick else 256)
    print(f"machine: {machine.describe()}", flush=True)
    shape = ModelShape.from_config(AutoConfig.from_pretrained(model_dir))
    base = preset(args.preset, grpo_steps=args.steps, grpo_prompts_per_step=args.prompts,
                  grpo_num_generations=args.generations, grpo_max_response_tokens=args.max_tokens,
                  grpo_mode=args.mode, rollout=args.rollout, grpo_max_tasks=0)
    stages = FAST_PATH_STAGES if args.fast_path else (("fast path", FAST),)
    results = []
    with open_sandbox(backend="auto") as sandbox:
        tasks = tiny_task_rows(8 if args.quick else 32, 0, sandbox) if args.tasks == "tiny" else load_tasks(args.tasks, "train")
        for name, overrides in stages:
            settings = base.replace(**overrides)
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as folder:
                result = run_grpo(model_dir, tasks, Path(folder) / "model", settings, sandbox=sandbox)
            figures = step_figures(result.curves)
            figures.update(bounds(shape, machine, settings, figures, args.prompts, args.generations))
            figures.update(stage=name, total_s=time.perf_counter() - started, rollout_engine=rollout_engine(result.metrics),
                           rewards=[row.get("reward") for row in result.curves],
                           response_lengths=[row.get("response_length") for row in result.curves])
            results.append(figures)
            print(f"\n{name}: {figures['step_s']:.2f} s a step ({args.prompts} prompts x G={args.generations}, "
                  f"prompts ~{figures['prompt_tokens']:.0f} tokens, responses {figures['response_tokens']:.0f} "
                  f"mean / {figures['response_max_tokens']:.0f} max tokens, {figures['dtype']})")
            print(ratio_table([("rollout", figures["rollout_s"], figures["rollout_bound_s"]),
                               ("update", figures["update_s"], figures["update_bound_s"]),
                               ("step", figures["step_s"], figures["step_bound_s"])]), flush=True)
    plain = results[0]
    if args.fast_path:
        print("\nfast path, one change at a time (speed-up of the step over the plain path):")
        for figures in results:
            # The first step's rollouts come from the same weights, so they must match; later ones follow
            # updates that agree to float rounding only, so a sampled token may differ there.
            first = figures["rewards"][:1] == plain["rewards"][:1] and figures["response_lengths"][:1] == plain["response_lengths"][:1]
            later = figures["rewards"] == plain["rewards"] and figures["response_lengths"] == plain["response_lengths"]
            print(f"  {figures['stage']:<20} step {figures['step_s']:6.2f} s  x{plain['step_s'] / figures['step_s']:.2f}  "
                  f"rollout x{plain['rollout_s'] / figures['rollout_s']:.2f}  update x{plain['update_s'] / figures['update_s']:.2f}"
                  f"  first step's rollouts as plain: {'yes' if first else 'NO'}, every step's: {'yes' if later else 'no'}")
    last = results[-1]
    summary = {
        "quick": args.quick, "model": str(model_dir), "machine": machine.name, "device": device,
        "torch_threads": machine.threads, "gemm_gflops": {k: round(v, 1) for k, v in machine.gemm_gflops.items()},
        "bandwidth_gbs": round(machine.bandwidth_gbs, 1), "rollout_engine": last["rollout_engine"], "mode": args.mode,
        "sequences_per_step": args.prompts * args.generations,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "stages": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()} for figures in results],
        "step_over_bound": round(last["step_s"] / last["step_bound_s"], 2),
        "rollout_over_bound": round(last["rollout_s"] / last["rollout_bound_s"], 2),
        "update_over_bound": round(last["update_s"] / last["update_bound_s"], 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
