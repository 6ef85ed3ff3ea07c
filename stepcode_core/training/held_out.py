"""Held-out step and final accuracy of a checkpoint: generate with a rollout engine, score with the
verifier (the training reward's)."""

from __future__ import annotations

from pathlib import Path

from stepcode_core.models import SamplingConfig, make_engine
from stepcode_core.rewards.verify import TaskSpec, step_accuracy, verify


def evaluate(model_dir: str | Path, tasks: list[dict], sandbox, *, max_tokens: int = 256, num_samples: int = 1,
             temperature: float = 0.0, seed: int = 0, backend: str = "auto", engine=None, batch_size: int = 32,
             vllm_gpu_memory_utilization: float | None = None, cpu_bf16: bool | None = None) -> dict:
    """Step accuracy (:func:`stepcode_core.rewards.verify.step_accuracy`), final accuracy (verified by
    execution) and mean reward of a checkpoint's responses to ``tasks``. ``cpu_bf16``: the
    transformers engine's precision on a CPU (None: bf16 autocast where the CPU has the instructions;
    False: fp32, as a run trained in fp32 should be scored on any CPU)."""
    vllm_options = {} if vllm_gpu_memory_utilization is None else {"gpu_memory_utilization": vllm_gpu_memory_utilization}
    engine = engine or make_engine(model_dir, backend=backend, vllm_options=vllm_options, cpu_bf16=cpu_bf16)
    sampling = SamplingConfig(max_new_tokens=max_tokens, temperature=temperature, num_samples=num_samples, seed=seed,
                              batch_size=batch_size)
    responses = engine.generate([row["prompt"] for row in tasks], sampling)
    specs = [TaskSpec.from_row(row) for row in tasks for _ in range(num_samples)]
    verdicts = verify(specs, [text for texts in responses for text in texts], sandbox)
    count = max(len(verdicts), 1)
    return {
        "step_accuracy": step_accuracy(verdicts),
        "final_accuracy": sum(v.final_reward for v in verdicts) / count,
        "reward": sum(v.reward for v in verdicts) / count,
        "responses": len(verdicts),
    }
