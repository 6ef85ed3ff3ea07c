"""One Bi-Level GRPO step: time and peak memory, split into rollout, reward and forward/backward.

Runs :func:`stepcode_core.training.grpo.run_grpo` (TRL GRPOTrainer subclass, real model, rewards verified
in the real sandbox) for ``--steps`` optimizer steps and reports the last one (the first pays
one-off costs: allocator warm-up, first sandbox forks). The trainer times each part itself:
``rollout`` is generation (transformers ``generate`` or vLLM), ``reward`` the sandboxed
verification, ``advantages`` the step-to-token mapping, and ``forward/backward`` the rest of the
step (log-probs, loss, backward, optimizer). Peak memory: the process's peak RSS, and on a GPU the
peak allocated CUDA memory.

Usage: python benchmarks/bench_grpo.py [--model DIR] [--preset cpu-smoke] [--tasks tiny|DATASET_DIR]
       [--steps 2] [--prompts 2] [--generations 4] [--max-tokens 64] [--mode bilevel] [--quick]
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
from stepcode_core.training.grpo import run_grpo  # noqa: E402
from stepcode_core.training.modeling import resolve_model  # noqa: E402
from stepcode_core.training.settings import preset  # noqa: E402
from stepcode_core.training.tasks import load_tasks  # noqa: E402
from stepcode_core.training.tiny_task import tiny_task_rows  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="Hugging Face folder (default: the embedded SmolLM2-135M)")
    parser.add_argument("--preset", default="cpu-smoke")
    parser.add_argument("--tasks", default="tiny", help="'tiny' (the small trace task) or a trace_dataset artifact folder")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="G")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--mode", default="bilevel")
    parser.add_argument("--rollout", default="auto")
    parser.add_argument("--quick", action="store_true", help="one step of 1 prompt x 2 samples x 8 tokens (seconds: checks the script runs, not the figures)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.prompts, args.generations, args.max_tokens = 1, 1, 2, 8

    import torch

    model_dir = resolve_model(args.model)
    settings = preset(args.preset, grpo_steps=args.steps, grpo_prompts_per_step=args.prompts,
                      grpo_num_generations=args.generations, grpo_max_response_tokens=args.max_tokens,
                      grpo_mode=args.mode, rollout=args.rollout, grpo_max_tasks=0)
    with open_sandbox(backend="auto") as sandbox:
        tasks = tiny_task_rows(8 if args.quick else 32, 0, sandbox) if args.tasks == "tiny" else load_tasks(args.tasks, "train")
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            result = run_grpo(model_dir, tasks, Path(folder) / "model", settings, sandbox=sandbox)
        total = time.perf_counter() - started
    last = result.curves[-1]
    step = last.get("step_time_s", 0.0)
    rollout, reward, advantages = last.get("rollout_s", 0.0), last.get("reward_s", 0.0), last.get("advantages_s", 0.0)
    figures = {
        "quick": args.quick,
        "model": str(model_dir),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "rollout_engine": result.metrics.get("rollout"),
        "mode": args.mode,
        "sequences_per_step": args.prompts * args.generations,
        "mean_response_tokens": round(last.get("response_length", 0.0), 1),
        "step_s": round(step, 3),
        "rollout_s": round(rollout, 3),
        "reward_s": round(reward, 3),
        "advantages_s": round(advantages, 4),
        "forward_backward_s": round(step - rollout - reward - advantages, 3),
        "rollout_share": round(rollout / step, 3) if step else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_cuda_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "steps_run": len(result.curves),
        "total_s": round(total, 1),
    }
    for key, value in figures.items():
        print(f"{key:24s} {value}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
