"""Training: SFT warm start, then Bi-Level GRPO (DESIGN §1.5), on TRL.

* :func:`run_sft` — TRL's ``SFTTrainer`` on the tasks' prompt → reference response (chat format,
  loss on the response only);
* :func:`run_grpo` — :class:`stepcode_core.training.trainer.BiLevelGRPOTrainer` (TRL's ``GRPOTrainer``
  with per-token Bi-Level advantages), rewards verified in the sandbox;
* :func:`evaluate` — held-out step and final accuracy of a checkpoint (rollout engine + verifier);
* :func:`plot_curves` — the training curves as a PNG.

Both trainers write a Hugging Face folder (``save_pretrained``, tokenizer included, LoRA merged) and
return a :class:`TrainingResult` with one dict per logged step. Settings come as a flat
:class:`TrainSettings`; :data:`PRESETS` holds ``cpu-smoke`` (SmolLM2-135M on a 2-core CPU, minutes)
and ``paper`` (Qwen2.5-Coder-7B-Instruct, G = 5, lr 1e-6, responses up to 4096 tokens, λ = 0.3,
bf16, vLLM rollouts).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stepcode_core.training.advantages import MODES
from stepcode_core.rewards.verify import TaskSpec, policy_of, verify

Progress = Callable[[str, int, int, dict], None]  # (phase, step, total steps, logged numbers)


@dataclass(frozen=True)
class TrainSettings:
    name: str = "custom"
    model: str = "embedded"  # "embedded", a local Hugging Face folder, or a hub id (where the network allows)
    seed: int = 0
    bf16: bool = False  # used only where a GPU is present
    rollout: str = "auto"  # auto (vLLM when installed and a GPU is present) | transformers | vllm
    lora: bool = False  # train a LoRA adapter (peft), merged into the saved checkpoint
    lora_rank: int = 16
    lora_alpha: int = 32
    train_top_layers: int = 0  # > 0: train only the top N decoder layers (and the final norm); a CPU-time knob
    gradient_checkpointing: bool = False
    tasks: str = "output,input"  # task kinds trained on
    # SFT warm start
    sft_epochs: float = 1.0
    sft_learning_rate: float = 5e-5
    sft_batch_size: int = 8
    sft_gradient_accumulation: int = 1
    sft_max_length: int = 1024
    sft_max_tasks: int = 0  # 0: every training task
    # Bi-Level GRPO
    grpo_steps: int = 0  # optimizer steps; 0: grpo_epochs over the tasks
    grpo_epochs: float = 1.0
    grpo_prompts_per_step: int = 2  # per process
    grpo_num_generations: int = 4  # G
    grpo_micro_batch: int = 0  # sequences per forward/backward; 0: the whole step at once
    grpo_learning_rate: float = 1e-6
    grpo_max_response_tokens: int = 256
    grpo_temperature: float = 1.0
    grpo_top_p: float = 1.0
    grpo_mode: str = "bilevel"  # terminal | step | bilevel
    grpo_lambda: float = 0.3
    grpo_beta: float = 0.0  # KL coefficient; 0: no reference model (TRL's default)
    grpo_epsilon: float = 0.2  # clip range of the ratio
    # DAPO's overlong filtering (TRL's mask_truncated_completions): a completion cut at the token limit
    # gets no gradient. Step rewards do not punish states past the trace, so without it a policy can
    # learn to run on past its answer until it is cut, and lose the final reward.
    grpo_mask_truncated: bool = True
    grpo_max_tasks: int = 0  # 0: every training task
    verify_timeout_s: float = 3.0
    vllm_gpu_memory_utilization: float = 0.3
    # held-out evaluation after training
    eval_tasks: int = 16
    eval_max_tokens: int = 256

    def replace(self, **overrides) -> "TrainSettings":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        settings = dataclasses.replace(self, **overrides)
        if settings.grpo_mode not in MODES:
            raise ValueError(f"grpo_mode must be one of {', '.join(MODES)}, got {settings.grpo_mode!r}")
        if settings.rollout not in ("auto", "transformers", "vllm"):
            raise ValueError(f"rollout must be auto, transformers or vllm, got {settings.rollout!r}")
        return settings

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, TrainSettings] = {
    # Runs end to end on 2 CPU cores in a few minutes: a handful of SFT and GRPO steps that prove the
    # graph works, not a model worth evaluating. Training only the top layers cuts the backward pass.
    "cpu-smoke": TrainSettings(
        name="cpu-smoke", model="embedded", train_top_layers=4,
        sft_epochs=1.0, sft_learning_rate=1e-4, sft_batch_size=8, sft_max_length=768, sft_max_tasks=32,
        grpo_steps=3, grpo_prompts_per_step=2, grpo_num_generations=4, grpo_learning_rate=1e-5,
        grpo_max_response_tokens=128, grpo_max_tasks=32, eval_tasks=6, eval_max_tokens=160,
    ),
    # The paper's settings (DESIGN §1.6). The KL coefficient and batch shape are our choices where the
    # paper is silent: beta = 0.001 (verl's kl_loss_coef default), 32 prompts x G per step.
    "paper": TrainSettings(
        name="paper", model="Qwen/Qwen2.5-Coder-7B-Instruct", bf16=True, rollout="vllm", gradient_checkpointing=True,
        sft_epochs=2.0, sft_learning_rate=1e-5, sft_batch_size=4, sft_gradient_accumulation=8, sft_max_length=6144,
        grpo_epochs=2.0, grpo_prompts_per_step=32, grpo_num_generations=5, grpo_micro_batch=4,
        grpo_learning_rate=1e-6, grpo_max_response_tokens=4096, grpo_lambda=0.3, grpo_beta=0.001,
        eval_tasks=256, eval_max_tokens=4096, vllm_gpu_memory_utilization=0.3,
    ),
}


def preset(name: str, **overrides) -> TrainSettings:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides)


@dataclass
class TrainingResult:
    checkpoint_dir: Path  # Hugging Face folder: weights, config, tokenizer
    curves: list[dict] = field(default_factory=list)  # one dict per logged optimizer step
    metrics: dict = field(default_factory=dict)  # final numbers (runtime, last values)


# ---- data ---------------------------------------------------------------------------------------


def load_tasks(dataset_dir: str | Path, split: str = "train") -> list[dict]:
    """Task rows of a ``trace_dataset`` artifact (``tasks/<split>.parquet``), each with its program's
    code (from ``<split>.parquet``) and anchor policy, which the verifier needs to trace a predicted
    input."""
    import pyarrow.parquet as pq

    folder = Path(dataset_dir)
    tasks = pq.read_table(folder / "tasks" / f"{split}.parquet").to_pylist()
    code_of = {row["program_id"]: row["code"] for row in pq.read_table(folder / f"{split}.parquet").to_pylist()}
    for row in tasks:
        row["code"] = code_of[row["program_id"]]
        row["policy"] = policy_of(row["code"], row["instrumented_code"])
    return tasks


def select_tasks(tasks: list[dict], kinds: str, limit: int, seed: int) -> list[dict]:
    """The tasks of the given kinds, shuffled by ``seed``, the first ``limit`` (0: all)."""
    wanted = {kind.strip() for kind in kinds.split(",") if kind.strip()}
    chosen = [row for row in tasks if row["task"] in wanted]
    random.Random(seed).shuffle(chosen)
    return chosen[:limit] if limit else chosen


def _messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


# ---- model helpers ------------------------------------------------------------------------------


def resolve_model(model: str, cache_dir: Path | None = None) -> str:
    if model == "embedded":
        from stepcode_core.models import materialize_embedded_model
        from stepcode_core.paths import stepcode_home

        return str(materialize_embedded_model(cache_dir or stepcode_home() / "models"))
    return model


def _device_dtype(settings: TrainSettings):
    import torch

    cuda = torch.cuda.is_available()
    return (torch.bfloat16 if settings.bf16 and cuda else torch.float32), cuda


def _load(model_dir: str, settings: TrainSettings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype, _ = _device_dtype(settings)
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


def _lora_config(settings: TrainSettings):
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


def use_vllm(settings: TrainSettings) -> bool:
    """vLLM rollouts (TRL's colocate mode) need vLLM and a GPU; ``rollout=vllm`` insists on them."""
    import importlib.util

    import torch

    available = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    if settings.rollout == "vllm" and not available:
        raise RuntimeError("rollout=vllm needs the vllm package and a CUDA GPU; use rollout=auto or transformers")
    return settings.rollout != "transformers" and available


class _Curves:
    """A TrainerCallback (built lazily, transformers is heavy) that keeps one dict per logged step
    and reports it to ``progress``."""

    def __new__(cls, phase: str, keys: dict[str, str], progress: Progress | None):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def __init__(self):
                self.rows: list[dict] = []
                self.started = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                if not any(key in logs for key in keys):
                    return
                row = {"step": state.global_step, "elapsed_s": round(time.perf_counter() - self.started, 2)}
                for source, name in keys.items():
                    value = logs.get(source)
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        row[name] = float(value)
                self.rows.append(row)
                if progress is not None:
                    progress(phase, state.global_step, state.max_steps, row)

        return Callback()


# ---- SFT ----------------------------------------------------------------------------------------


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
        {"prompt": _messages(row["prompt"]), "completion": [{"role": "assistant", "content": row["reference"]}]}
        for row in chosen
    ])
    model, tokenizer = _load(str(model_dir), settings)
    _, cuda = _device_dtype(settings)
    scratch = tempfile.mkdtemp(prefix="stepcode-sft-")  # the trainer's output_dir; nothing is saved there
    args = SFTConfig(
        output_dir=scratch, num_train_epochs=settings.sft_epochs,
        learning_rate=settings.sft_learning_rate, lr_scheduler_type="constant",
        per_device_train_batch_size=settings.sft_batch_size,
        gradient_accumulation_steps=settings.sft_gradient_accumulation, max_length=settings.sft_max_length,
        completion_only_loss=True, packing=False, logging_steps=1, save_strategy="no", report_to="none",
        seed=settings.seed, bf16=settings.bf16 and cuda, gradient_checkpointing=settings.gradient_checkpointing,
        dataset_num_proc=None, disable_tqdm=True,
    )
    curves = _Curves("sft", {"loss": "loss", "mean_token_accuracy": "token_accuracy", "learning_rate": "learning_rate"},
                     progress)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=_lora_config(settings), callbacks=[curves])
    try:
        output = trainer.train()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    folder = save_checkpoint(trainer, tokenizer, output_dir, settings.lora)
    metrics = {"train_runtime_s": round(output.metrics.get("train_runtime", 0.0), 1), "steps": trainer.state.global_step,
               "tasks": len(chosen)}
    if curves.rows:
        metrics["final_loss"] = curves.rows[-1].get("loss")
    return TrainingResult(folder, curves.rows, metrics)


# ---- GRPO ---------------------------------------------------------------------------------------


def _grpo_rows(tasks: list[dict]) -> list[dict]:
    return [
        {
            "prompt": _messages(row["prompt"]), "task": row["task"], "entry_point": row.get("entry_point") or "f",
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
    response_length (tokens), loss, per optimizer step."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import GRPOConfig

    from stepcode_core.training.trainer import BiLevelGRPOTrainer, SandboxReward

    set_seed(settings.seed)
    output_dir = Path(output_dir)
    chosen = select_tasks(tasks, settings.tasks, settings.grpo_max_tasks, settings.seed)
    if not chosen:
        raise ValueError("no training tasks for GRPO")
    missing = [row["task_id"] for row in chosen if not row.get("code")]
    if missing:
        raise ValueError(f"tasks lack their program's code (use load_tasks): {missing[:3]}")
    per_step = settings.grpo_prompts_per_step * settings.grpo_num_generations
    micro = settings.grpo_micro_batch or per_step
    if per_step % micro:
        raise ValueError(f"grpo_micro_batch ({micro}) must divide prompts_per_step x G ({per_step})")
    steps = settings.grpo_steps or max(1, math.ceil(settings.grpo_epochs * len(chosen) / settings.grpo_prompts_per_step))
    model, tokenizer = _load(str(model_dir), settings)
    _, cuda = _device_dtype(settings)
    vllm = use_vllm(settings)
    scratch = tempfile.mkdtemp(prefix="stepcode-grpo-")  # the trainer's output_dir; nothing is saved there
    args = GRPOConfig(
        output_dir=scratch, max_steps=steps, learning_rate=settings.grpo_learning_rate,
        lr_scheduler_type="constant", per_device_train_batch_size=micro, gradient_accumulation_steps=per_step // micro,
        num_generations=settings.grpo_num_generations, max_completion_length=settings.grpo_max_response_tokens,
        temperature=settings.grpo_temperature, top_p=settings.grpo_top_p, beta=settings.grpo_beta,
        epsilon=settings.grpo_epsilon, loss_type="dapo", mask_truncated_completions=settings.grpo_mask_truncated,
        logging_steps=1, save_strategy="no", report_to="none",
        seed=settings.seed, data_seed=settings.seed, bf16=settings.bf16 and cuda,
        gradient_checkpointing=settings.gradient_checkpointing, use_vllm=vllm, vllm_mode="colocate",
        vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization, disable_tqdm=True, log_completions=False,
    )
    curves = _Curves("grpo", {"reward": "reward", "step_accuracy": "step_accuracy", "final_accuracy": "final_accuracy",
                              "kl": "kl", "completions/mean_length": "response_length", "loss": "loss",
                              "step_time": "step_time_s", "time/rollout_s": "rollout_s", "time/reward_s": "reward_s",
                              "time/advantages_s": "advantages_s"}, progress)
    with contextlib.ExitStack() as stack:
        if sandbox is None:
            from sandbox import open_sandbox

            sandbox = stack.enter_context(open_sandbox(backend="auto"))
        reward = SandboxReward(sandbox, timeout_s=settings.verify_timeout_s)
        trainer = BiLevelGRPOTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(_grpo_rows(chosen)), processing_class=tokenizer,
            peft_config=_lora_config(settings), callbacks=[curves], reward=reward, mode=settings.grpo_mode,
            lam=settings.grpo_lambda,
        )
        try:
            output = trainer.train()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    folder = save_checkpoint(trainer, tokenizer, output_dir, settings.lora)
    metrics = {"train_runtime_s": round(output.metrics.get("train_runtime", 0.0), 1), "steps": trainer.state.global_step,
               "tasks": len(chosen), "rollout": "vllm" if vllm else "transformers", "mode": settings.grpo_mode}
    if curves.rows:
        metrics.update({f"last_{k}": v for k, v in curves.rows[-1].items() if k not in ("step", "elapsed_s")})
    return TrainingResult(folder, curves.rows, metrics)


# ---- evaluation and plots -----------------------------------------------------------------------


def evaluate(model_dir: str | Path, tasks: list[dict], sandbox, *, max_tokens: int = 256, num_samples: int = 1,
             temperature: float = 0.0, seed: int = 0, backend: str = "auto", engine=None, batch_size: int = 32) -> dict:
    """Step accuracy (mean state reward per response), final accuracy (verified by execution) and
    mean reward of a checkpoint's responses to ``tasks``."""
    from stepcode_core.models import SamplingConfig, make_engine

    engine = engine or make_engine(model_dir, backend=backend)
    sampling = SamplingConfig(max_new_tokens=max_tokens, temperature=temperature, num_samples=num_samples, seed=seed,
                              batch_size=batch_size)
    responses = engine.generate([row["prompt"] for row in tasks], sampling)
    specs = [TaskSpec.from_row(row) for row in tasks for _ in range(num_samples)]
    verdicts = verify(specs, [text for texts in responses for text in texts], sandbox)
    count = max(len(verdicts), 1)
    return {
        "step_accuracy": sum(v.step_accuracy for v in verdicts) / count,
        "final_accuracy": sum(v.final_reward for v in verdicts) / count,
        "reward": sum(v.reward for v in verdicts) / count,
        "responses": len(verdicts),
    }


def plot_curves(curves: list[dict], png_path: str | Path, title: str = "training") -> Path:
    """One panel per logged quantity against the optimizer step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("reward", "step_accuracy", "final_accuracy", "kl", "response_length", "loss", "token_accuracy")
            if any(k in row for row in curves)]
    columns = max(1, min(3, len(keys)))
    rows = max(1, math.ceil(len(keys) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), dpi=100, squeeze=False)
    for axis, key in zip(axes.flat, keys):
        points = [(row["step"], row[key]) for row in curves if key in row]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color="#4C72B0")
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    if not keys:
        axes.flat[0].text(0.5, 0.5, "no logged steps", ha="center", va="center")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path = Path(png_path)
    path.write_bytes(buffer.getvalue())
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m stepcode_core.training.core sft|grpo --model DIR --dataset DIR --out DIR [--preset P]
    [--set key=value ...]``: one training phase outside Dagster, e.g. under ``accelerate launch``
    for several GPUs (README, "Training")."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m stepcode_core.training.core", description=main.__doc__.split("\n")[0])
    parser.add_argument("phase", choices=["sft", "grpo"])
    parser.add_argument("--model", required=True, help="Hugging Face folder to start from ('embedded': SmolLM2-135M)")
    parser.add_argument("--dataset", required=True, help="a trace_dataset artifact folder (tasks/train.parquet ...)")
    parser.add_argument("--out", required=True, help="where the checkpoint folder goes")
    parser.add_argument("--preset", default="cpu-smoke", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainSettings field (JSON values: 1e-6, true, \"vllm\")")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    settings = preset(args.preset, **overrides)
    tasks = load_tasks(args.dataset, "train")
    out = Path(args.out)

    def progress(phase: str, step: int, total: int, row: dict) -> None:
        print(json.dumps({"phase": phase, "step": step, "total": total, **row}), flush=True)

    model = resolve_model(args.model)
    if args.phase == "sft":
        result = run_sft(model, tasks, out, settings, progress)
    else:
        result = run_grpo(model, tasks, out, settings, progress=progress)
    (out / "curves.json").write_text(json.dumps(result.curves, indent=1))
    plot_curves(result.curves, out / "curves.png", title=f"{args.phase} ({settings.name})")
    print(json.dumps({"checkpoint_dir": str(result.checkpoint_dir), **result.metrics}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
