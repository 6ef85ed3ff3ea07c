"""Supervised warm start on the trace dataset's tasks, with TRL's ``SFTTrainer``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from stepcode_core.training.curves import CurvesCallback
from stepcode_core.training.fast_path import compact_lm_head_on_cpu
from stepcode_core.training.modeling import (
    device_dtype,
    load_model,
    lora_config,
    mixed_precision_bf16,
    process_count,
    train_and_save,
)
from stepcode_core.training.settings import (
    Progress,
    TrainingResult,
    TrainSettings,
    batch_shape,
)
from stepcode_core.training.tasks import messages, select_tasks


def run_sft(model_dir: str | Path, tasks: list[dict], output_dir: str | Path, settings: TrainSettings,
            progress: Progress | None = None) -> TrainingResult:
    """Supervised warm start with TRL's ``SFTTrainer``: prompt → reference response, as chat
    messages, loss on the response tokens only. Writes the checkpoint (a Hugging Face folder) to
    ``output_dir``."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(settings.seed)
    output_dir = Path(output_dir)
    chosen = select_tasks(tasks, settings.tasks, settings.sft_max_tasks, settings.seed)
    if not chosen:
        raise ValueError("no training tasks for SFT")
    dataset = Dataset.from_list([
        {"prompt": messages(row["prompt"]), "completion": [{"role": "assistant", "content": row["reference"]}]}
        for row in chosen
    ])
    micro, accumulation = batch_shape(settings.sft_batch_size, settings.sft_micro_batch, process_count(),
                                      "sft_batch_size")
    model, tokenizer = load_model(str(model_dir), settings)
    _, cuda = device_dtype(settings)
    scratch = tempfile.mkdtemp(prefix="stepcode-sft-")  # the trainer's output_dir; nothing is saved there
    args = SFTConfig(
        output_dir=scratch, num_train_epochs=settings.sft_epochs,
        learning_rate=settings.sft_learning_rate, lr_scheduler_type="constant",
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation, max_length=settings.sft_max_length,
        completion_only_loss=True, packing=False, logging_steps=1, save_strategy="no", report_to="none",
        seed=settings.seed, bf16=mixed_precision_bf16(settings), gradient_checkpointing=settings.gradient_checkpointing,
        dataset_num_proc=None, disable_tqdm=True, use_cpu=not cuda,
    )
    curves = CurvesCallback("sft", {"loss": "loss", "mean_token_accuracy": "token_accuracy", "learning_rate": "learning_rate"},
                     progress)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(settings), callbacks=[curves])
    with compact_lm_head_on_cpu(settings.compact_lm_head):
        folder, metrics = train_and_save(trainer, tokenizer, scratch, output_dir, settings.lora, len(chosen))
    if curves.rows:
        metrics["final_loss"] = curves.rows[-1].get("loss")
    return TrainingResult(folder, curves.rows, metrics)
