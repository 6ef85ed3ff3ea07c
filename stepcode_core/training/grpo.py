"""Bi-Level GRPO from a checkpoint, rewards verified in the sandbox (see
:mod:`stepcode_core.training.trainer` for what it adds to TRL's ``GRPOTrainer``)."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from pathlib import Path

from sandbox import open_sandbox
from stepcode_core.training.curves import CurvesCallback
from stepcode_core.training.fast_path import compact_lm_head_on_cpu
from stepcode_core.training.modeling import (
    device_dtype,
    load_model,
    lora_config,
    mixed_precision_bf16,
    process_count,
    train_and_save,
    use_vllm,
)
from stepcode_core.training.settings import (
    Progress,
    TrainingResult,
    TrainSettings,
    batch_shape,
)
from stepcode_core.training.tasks import messages, select_tasks
from stepcode_core.training.trainer import BiLevelGRPOTrainer, SandboxReward


def _grpo_rows(tasks: list[dict]) -> list[dict]:
    return [
        {
            "prompt": messages(row["prompt"]), "task_id": row.get("task_id"), "task": row["task"], "entry_point": row.get("entry_point") or "f",
            "input": row["input"], "output": row.get("output") or "None", "code": row["code"],
            "policy": row.get("policy") or "paper",
            "steps_json": json.dumps([[step["name"], step["value"]] for step in row.get("steps") or []]),
        }
        for row in tasks
    ]


def run_grpo(model_dir: str | Path, tasks: list[dict], output_dir: str | Path, settings: TrainSettings, *,
             sandbox=None, progress: Progress | None = None) -> TrainingResult:
    """Bi-Level GRPO (``settings.grpo_mode``: terminal | step | bilevel) from the checkpoint in
    ``model_dir``, rewards verified in ``sandbox`` (opened here when None). Writes the checkpoint (a
    Hugging Face folder) to ``output_dir``. Curves: reward, step_accuracy, final_accuracy, kl (when beta > 0),
    response_length (tokens), loss, learning_rate and the step's timings (rollout_s ...), per optimizer step."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig

    set_seed(settings.seed)
    output_dir = Path(output_dir)
    chosen = select_tasks(tasks, settings.tasks, settings.grpo_max_tasks, settings.seed)
    if not chosen:
        raise ValueError("no training tasks for GRPO")
    missing = [row["task_id"] for row in chosen if not row.get("code")]
    if missing:
        raise ValueError(f"tasks lack their program's code (use load_tasks): {missing[:3]}")
    # A group's samples may sit on two processes: the trainer gathers verdicts before the advantages.
    micro, accumulation = batch_shape(settings.grpo_prompts_per_step * settings.grpo_num_generations,
                                      settings.grpo_micro_batch, process_count(), "grpo_prompts_per_step x G")
    steps = settings.grpo_steps or max(1, math.ceil(settings.grpo_epochs * len(chosen) / settings.grpo_prompts_per_step))
    model, tokenizer = load_model(str(model_dir), settings)
    _, cuda = device_dtype(settings)
    vllm = use_vllm(settings)
    scratch = tempfile.mkdtemp(prefix="stepcode-grpo-")  # the trainer's output_dir; nothing is saved there
    args = GRPOConfig(
        output_dir=scratch, max_steps=steps, learning_rate=settings.grpo_learning_rate,
        lr_scheduler_type="constant", per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        num_generations=settings.grpo_num_generations, max_completion_length=settings.grpo_max_response_tokens,
        temperature=settings.grpo_temperature, top_p=settings.grpo_top_p, beta=settings.grpo_beta,
        epsilon=settings.grpo_epsilon, loss_type="dapo", mask_truncated_completions=settings.grpo_mask_truncated,
        logging_steps=1, save_strategy="no", report_to="none",
        seed=settings.seed, data_seed=settings.seed, bf16=mixed_precision_bf16(settings),
        gradient_checkpointing=settings.gradient_checkpointing, use_vllm=vllm, vllm_mode="colocate",
        vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization, disable_tqdm=True, log_completions=False,
        use_cpu=not cuda,
    )
    curves = CurvesCallback("grpo", {"reward": "reward", "step_accuracy": "step_accuracy", "final_accuracy": "final_accuracy",
                              "kl": "kl", "completions/mean_length": "response_length",
                              "completions/max_length": "response_max_length", "prompt_length": "prompt_length", "loss": "loss",
                              "step_time": "step_time_s", "time/rollout_s": "rollout_s", "time/reward_s": "reward_s",
                              "time/advantages_s": "advantages_s", "learning_rate": "learning_rate"}, progress)
    with contextlib.ExitStack() as stack:
        if sandbox is None:
            sandbox = stack.enter_context(open_sandbox(backend="auto"))
        reward = SandboxReward(sandbox, timeout_s=settings.verify_timeout_s)
        trainer = BiLevelGRPOTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(_grpo_rows(chosen)), processing_class=tokenizer,
            peft_config=lora_config(settings), callbacks=[curves], reward=reward, mode=settings.grpo_mode,
            lam=settings.grpo_lambda, reproducible_rollouts=settings.grpo_reproducible_rollouts and not vllm,
            record_to=output_dir / "rollouts" if settings.grpo_record_rollouts else None,
            shared_prefill=settings.shared_prefill, bf16_rollout=settings.bf16_rollout,
            packed_rollout_weights=settings.packed_rollout_weights, inverse_cdf_sampling=settings.inverse_cdf_sampling,
            lean_decode=settings.lean_decode,
        )
        stack.enter_context(compact_lm_head_on_cpu(settings.compact_lm_head))
        folder, metrics = train_and_save(trainer, tokenizer, scratch, output_dir, settings.lora, len(chosen))
    metrics.update(rollout="vllm" if vllm else "transformers", mode=settings.grpo_mode,
                   rollout_lean_decodes=trainer.decode_loops["lean"],
                   rollout_generate_decodes=trainer.decode_loops["generate"])
    if curves.rows:
        metrics.update({f"last_{k}": v for k, v in curves.rows[-1].items() if k not in ("step", "elapsed_s")})
    return TrainingResult(folder, curves.rows, metrics)
