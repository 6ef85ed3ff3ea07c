"""Checkpoints as partitions of the evaluation assets.

A checkpoint is a Hugging Face folder. Its partition key is ``<label>-<weights hash>``, so a new or
changed checkpoint is a new partition and evaluating it touches no other partition. Two origins:

* the training assets' materializations (``base_model``, ``sft_checkpoint``, ``grpo_checkpoint``),
  read from the Dagster instance: the folder is the ``model_dir`` metadata, the hash is the
  materialization's DataVersion (a hash of the weights);
* a folder of external checkpoints (``external_dir``, which the deployment's resource set fills
  from ``$STEPCODE_EXTERNAL_CHECKPOINTS``; default ``$STEPCODE_HOME/checkpoints``): every
  sub-folder with a ``config.json``.

The registry (a JSON file under ``$STEPCODE_HOME``) maps each partition key to its folder, since a
partition key alone cannot say where the weights lie.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from stepcode_core.models import ModelError, weights_hash
from stepcode_core.paths import stepcode_home

CHECKPOINT_PARTITIONS = dg.DynamicPartitionsDefinition(name="checkpoints")
TRAINED_CHECKPOINT_ASSETS = ("base_model", "sft_checkpoint", "grpo_checkpoint")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


@dataclass(frozen=True)
class Checkpoint:
    key: str  # the partition key
    model_dir: str
    weights_hash: str
    origin: str  # "asset:<name>" or "folder"


def partition_key(label: str, digest: str) -> str:
    return f"{_UNSAFE.sub('_', label).strip('_') or 'model'}-{digest[:12]}"


def _fingerprint(folder: Path) -> str:
    """Names, sizes and mtimes of the weight files: a cheap test for "changed" before hashing them."""
    parts = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
             for p in sorted(folder.iterdir()) if p.suffix in (".safetensors", ".bin")]
    return "|".join(parts)


class CheckpointRegistry(dg.ConfigurableResource):
    """Which checkpoint each evaluation partition stands for, and where external checkpoints lie."""

    registry_file: str = Field(default="", description="JSON registry; empty: $STEPCODE_HOME/checkpoints.json")
    external_dir: str = Field(default="", description="folder of external HF checkpoints; empty: "
                              "$STEPCODE_HOME/checkpoints")

    def _file(self) -> Path:
        return Path(self.registry_file) if self.registry_file else stepcode_home() / "checkpoints.json"

    def external_path(self) -> Path:
        return Path(self.external_dir) if self.external_dir else stepcode_home() / "checkpoints"

    def _read(self) -> dict:
        path = self._file()
        return json.loads(path.read_text()) if path.is_file() else {"checkpoints": {}, "fingerprints": {}}

    def _write(self, data: dict) -> None:
        path = self._file()
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        staging.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(staging, path)

    def all(self) -> dict[str, Checkpoint]:
        return {key: Checkpoint(**value) for key, value in self._read()["checkpoints"].items()}

    def resolve(self, key: str) -> Checkpoint:
        found = self.all().get(key)
        if found is None:
            raise dg.Failure(f"checkpoint partition {key!r} is not registered; the checkpoint sensor registers "
                             f"trained and external checkpoints (registry {self._file()})")
        folder = Path(found.model_dir)
        if not (folder / "config.json").is_file():
            raise dg.Failure(f"checkpoint {key}: {found.model_dir} is no longer a Hugging Face folder")
        # A folder changed in place holds other weights: evaluating them under this key would be wrong.
        recorded = [cheap for cheap, owner in self._read()["fingerprints"].values() if owner == key]
        if found.origin == "folder" and _fingerprint(folder) not in recorded:
            try:
                current = weights_hash(folder)
            except ModelError as exc:
                raise dg.Failure(f"checkpoint {key}: {exc}") from exc
            if current != found.weights_hash:
                raise dg.Failure(f"checkpoint {key}: {folder} changed since it was registered (its weights hash "
                                 f"{current[:12]} now); the checkpoint sensor registers it as a new partition")
        return found

    def register(self, checkpoints: list[Checkpoint], fingerprints: dict[str, list[str]] | None = None) -> None:
        if not checkpoints and not fingerprints:
            return  # nothing new: a sensor tick writes nothing
        data = self._read()
        for checkpoint in checkpoints:
            data["checkpoints"][checkpoint.key] = asdict(checkpoint)
        data["fingerprints"].update(fingerprints or {})
        self._write(data)

    def discover(self, instance: dg.DagsterInstance) -> tuple[list[Checkpoint], dict[str, list[str]]]:
        """Checkpoints not registered yet (trained, then external), and the fingerprints of the
        external folders looked at."""
        # Known: registered and still a partition of this instance.
        partitions = set(instance.get_dynamic_partitions(CHECKPOINT_PARTITIONS.name))
        registry = self._read()
        known = {key for key in registry["checkpoints"] if key in partitions}
        found: dict[str, Checkpoint] = {}
        for asset in TRAINED_CHECKPOINT_ASSETS:
            checkpoint = _trained_checkpoint(instance, asset)
            if checkpoint and checkpoint.key not in known:
                found[checkpoint.key] = checkpoint
        fingerprints = registry["fingerprints"]  # folder -> [fingerprint, partition key]
        seen: dict[str, list[str]] = {}
        external = self.external_path()
        for folder in sorted(external.iterdir()) if external.is_dir() else []:
            if not (folder / "config.json").is_file():
                continue
            cheap = _fingerprint(folder)
            before = fingerprints.get(str(folder))
            if before and before[0] == cheap and before[1] in known:
                continue  # unchanged since it was last hashed
            try:
                digest = weights_hash(folder)
            except ModelError:
                continue  # a folder still being written: no weights yet
            checkpoint = Checkpoint(partition_key(f"ext_{folder.name}", digest), str(folder.resolve()), digest, "folder")
            seen[str(folder)] = [cheap, checkpoint.key]
            if checkpoint.key not in known:
                found[checkpoint.key] = checkpoint
        return list(found.values()), seen


def _trained_checkpoint(instance: dg.DagsterInstance, asset: str) -> Checkpoint | None:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return None
    materialization = event.asset_materialization
    model_dir = materialization.metadata.get("model_dir")
    digest = materialization.tags.get("dagster/data_version") if materialization.tags else None
    if model_dir is None or not digest:
        return None
    folder = str(model_dir.value)
    if not (Path(folder) / "config.json").is_file():
        return None
    return Checkpoint(partition_key(asset, digest), folder, digest, f"asset:{asset}")


def register_new_checkpoints(instance: dg.DagsterInstance, registry: CheckpointRegistry) -> list[Checkpoint]:
    """Discover, register and add as partitions; what the sensor does, for scripts (the demo)."""
    new, fingerprints = registry.discover(instance)
    registry.register(new, fingerprints)
    if new:
        instance.add_dynamic_partitions(CHECKPOINT_PARTITIONS.name, [checkpoint.key for checkpoint in new])
    return new
