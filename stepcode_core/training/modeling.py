"""Loading, freezing, adapting and saving the model being trained.

torch, transformers and peft come with the ``train`` extra and are imported where they are used, so
that the rest of StepCode (the pipeline, the sandbox, tracing) runs without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from stepcode_core.models import cpu_supports_bf16, materialize_embedded_model, vllm_preferred
from stepcode_core.paths import stepcode_home
from stepcode_core.training.settings import TrainSettings


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    if model == "embedded":
        return str(materialize_embedded_model(cache_dir or stepcode_home() / "models"))
    return model


def device_dtype(settings: TrainSettings):
    import torch

    cuda = torch.cuda.is_available()
    return (torch.bfloat16 if settings.bf16 and cuda else torch.float32), cuda


def mixed_precision_bf16(settings: TrainSettings) -> bool:
    """The trainer's ``bf16`` flag: bf16 weights on a GPU, bf16 autocast over fp32 weights on a CPU
    that has the instructions, off otherwise."""
    import torch

    return settings.bf16 and (torch.cuda.is_available() or cpu_supports_bf16())


def process_count() -> int:
    """How many training processes take part (``accelerate launch --num_processes`` sets WORLD_SIZE;
    1 under plain python). Read from the environment: the process group itself is started by the
    trainer, with its arguments (backend, timeout)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def load_model(model_dir: str, settings: TrainSettings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype, _ = device_dtype(settings)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if settings.train_top_layers and not settings.lora:
        freeze_lower_layers(model, settings.train_top_layers)
    return model, tokenizer


def freeze_lower_layers(model, top: int) -> None:
    """Train only the top ``top`` decoder layers and the final norm: the backward pass then stops
    there, which is what makes GRPO steps affordable on a CPU (embeddings and LM head stay frozen)."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: no decoder layers to freeze")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in list(layers)[-top:]:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
    norm = getattr(decoder, "norm", None)
    if norm is not None:
        for parameter in norm.parameters():
            parameter.requires_grad_(True)


def lora_config(settings: TrainSettings):
    if not settings.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules="all-linear")


def save_checkpoint(trainer, tokenizer, folder: Path, lora: bool) -> Path:
    """A Hugging Face folder loadable by transformers and vLLM. Full fine-tuning goes through
    ``trainer.save_model``, which gathers FSDP / ZeRO-3 shards and writes on the main process; a
    LoRA adapter is merged into the base weights first."""
    folder.mkdir(parents=True, exist_ok=True)
    if lora:
        model = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.accelerator.is_main_process:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
    else:
        trainer.save_model(str(folder))
        if trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(folder)
    (folder / "training_args.bin").unlink(missing_ok=True)  # pickled run arguments, not weights (and not stable)
    trainer.accelerator.wait_for_everyone()
    return folder


def train_and_save(trainer, tokenizer, scratch: str, output_dir: Path, lora: bool, n_tasks: int) -> tuple[Path, dict]:
    """Run ``trainer``, remove its scratch output folder (nothing is saved there), save the checkpoint to
    ``output_dir``; returns the folder and the metrics every training run reports."""
    from transformers import PrinterCallback

    # The CurvesCallback reports every logged step; the trainer's own printing of each log dict is noise.
    trainer.remove_callback(PrinterCallback)
    try:
        output = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    folder = save_checkpoint(trainer, tokenizer, output_dir, lora)
    accelerator = trainer.accelerator
    metrics = {"train_runtime_s": round(output.metrics.get("train_runtime", 0.0), 1), "steps": trainer.state.global_step,
               "tasks": n_tasks, "processes": accelerator.num_processes,
               "distributed": str(accelerator.distributed_type).removeprefix("DistributedType.")}
    return folder, metrics


def use_vllm(settings: TrainSettings) -> bool:
    """vLLM rollouts (TRL's colocate mode): ``auto`` follows :func:`stepcode_core.models.vllm_preferred`
    (installed and a GPU present); ``rollout=vllm`` insists on both."""
    available = vllm_preferred()
    if settings.rollout == "vllm" and not available:
        raise RuntimeError("rollout=vllm needs the vllm package and a CUDA GPU; use rollout=auto or transformers")
    return settings.rollout != "transformers" and available
