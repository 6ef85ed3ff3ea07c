"""The GPU check (``scripts/gpu_check.sh``): bf16 Bi-Level GRPO steps on one CUDA GPU, offline.

The model is a randomly initialised Qwen2 with Qwen2.5-Coder-0.5B's architecture (24 layers, 896
wide, 14 query / 2 key-value heads, 4864 MLP), built from a config: no download. Its vocabulary is
the embedded SmolLM2 tokenizer's (49,152 tokens instead of 151,936), so that every sampled id
decodes; that makes it ~0.36B parameters instead of 0.49B. Rewards are verified in the sandbox on
the tiny trace task, as in training.

Printed: rollout tokens/s (transformers; vLLM too where it is installed), each GRPO step's time split
into rollout / reward / the rest (forward, backward, optimizer), peak GPU memory; the last line is
one JSON object with all of it. Without a CUDA GPU it prints one line saying so and exits 1.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ARCHITECTURE = {  # Qwen2.5-Coder-0.5B-Instruct's config.json, but the vocabulary
    "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
    "num_key_value_heads": 2, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "hidden_act": "silu",
}


def build_model(folder: Path) -> tuple[Path, int]:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from stepcode_core.models import materialize_embedded_model
    from stepcode_core.paths import stepcode_home

    tokenizer = AutoTokenizer.from_pretrained(materialize_embedded_model(stepcode_home() / "models"))
    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **ARCHITECTURE)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def vllm_tokens_per_s(model_dir: Path, prompts: list[str], max_tokens: int) -> float | None:
    """Generated tokens per second of vLLM on the same prompts (8 samples each), counted from the
    engine's token ids; None where vLLM is not installed."""
    from stepcode_core.models import VLLMEngine, vllm_available

    if not vllm_available():
        return None
    from vllm import SamplingParams

    engine = VLLMEngine(model_dir, gpu_memory_utilization=0.3, max_model_len=2048)
    texts = [engine.chat_text(prompt) for prompt in prompts]
    params = SamplingParams(n=8, temperature=1.0, max_tokens=max_tokens, seed=0)
    engine.llm.generate(texts[:2], params, use_tqdm=False)  # warm-up: CUDA graphs, compilation
    started = time.perf_counter()
    outputs = engine.llm.generate(texts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(sample.token_ids) for output in outputs for sample in output.outputs)
    del engine
    return tokens / seconds


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is present (torch.cuda.is_available() is False); nothing was run")
        return 1
    from sandbox import open_sandbox
    from stepcode_core.training.grpo import run_grpo
    from stepcode_core.training.settings import preset
    from stepcode_core.training.tiny_task import tiny_task_rows

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="stepcode-gpu-check-"))
    model_dir, parameters = build_model(work / "model")
    steps, prompts, generations, max_tokens = 4, 8, 8, 256
    settings = preset("cpu-smoke", bf16=True, rollout="transformers", train_top_layers=0, grpo_steps=steps,
                      grpo_prompts_per_step=prompts, grpo_num_generations=generations, grpo_micro_batch=16,
                      grpo_max_response_tokens=max_tokens, grpo_learning_rate=1e-6, grpo_max_tasks=0, eval_tasks=0,
                      grpo_mask_truncated=False)

    def progress(phase, step, total, row):
        print(f"{phase} step {step}/{total}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                            if isinstance(v, float)), flush=True)

    torch.cuda.reset_peak_memory_stats()
    with open_sandbox(backend="auto") as sandbox:
        tasks = tiny_task_rows(64, 0, sandbox)
        result = run_grpo(model_dir, tasks, work / "grpo", settings, sandbox=sandbox, progress=progress)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30
    rows = result.curves[1:] or result.curves  # the first step pays CUDA start-up
    mean = lambda key: sum(r.get(key, 0.0) for r in rows) / len(rows)
    sequences = prompts * generations
    step_s, rollout_s, reward_s = mean("step_time_s"), mean("rollout_s"), mean("reward_s")
    figures = {
        "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "parameters_m": round(parameters / 1e6, 1),
        "grpo_steps": len(result.curves), "sequences_per_step": sequences, "max_response_tokens": max_tokens,
        "step_s": round(step_s, 2), "rollout_s": round(rollout_s, 2), "reward_s": round(reward_s, 3),
        "update_s": round(step_s - rollout_s - reward_s, 2),
        "mean_response_tokens": round(mean("response_length"), 1),
        "transformers_rollout_tokens_per_s": round(mean("response_length") * sequences / max(rollout_s, 1e-9), 1),
        "peak_gpu_memory_gib": round(peak_gib, 2),
    }
    torch.cuda.empty_cache()
    vllm_rate = vllm_tokens_per_s(model_dir, [t["prompt"] for t in tasks[:16]], max_tokens)
    figures["vllm_rollout_tokens_per_s"] = None if vllm_rate is None else round(vllm_rate, 1)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
