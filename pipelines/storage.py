"""Content-addressed artifact storage for the assets.

Each asset writes its artifact to ``<root>/<asset>/<cache key>/``, where the cache key hashes the
asset's code version, its config and the content versions of its inputs. An asset whose key already
has an artifact returns it without recomputing, so re-materializing an unchanged graph executes no
program and trains nothing. Artifacts are written to a temp folder and renamed into place: a killed
run never leaves a half-written artifact where a later run would find it.

Dagster's own caching marks assets stale but always re-runs what is launched; the reuse across
runs, keyed by content, is what this module adds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from stepcode_core.paths import stepcode_home
from stepcode_core.training.tracking import TENSORBOARD_DIR

# Output(data_version=...) is marked beta; it is the documented way to record content versions.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


@dataclass(frozen=True)
class ArtifactRef:
    """What an asset hands downstream: where its artifact lies and the hash of its content."""

    asset: str
    cache_key: str
    path: str  # folder of the artifact
    content_hash: str

    def file(self, name: str) -> Path:
        return Path(self.path) / name

    def read_table(self, name: str | None = None) -> pa.Table:
        """The named Parquet file, else ``data.parquet``, else every ``*.parquet`` shard in order."""
        if name is not None or self.file("data.parquet").is_file():
            return pq.read_table(self.file(name or "data.parquet"))
        shards = sorted(Path(self.path).glob("*.parquet"))
        return pa.concat_tables(pq.read_table(shard) for shard in shards)


def cache_key(asset: str, code_version: str, config: dict, inputs: list[ArtifactRef]) -> str:
    payload = {
        "asset": asset,
        "code_version": code_version,
        "config": config,
        "inputs": sorted((ref.asset, ref.content_hash) for ref in inputs),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Top-level folders that log how an artifact was made rather than hold its content: TensorBoard's
# event files, nondeterministic by nature.
UNHASHED_DIRS = (TENSORBOARD_DIR,)


def hash_files(folder: Path) -> str:
    """Hash of the artifact's content: every file's name and bytes (meta.json and UNHASHED_DIRS aside)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "meta.json"
                       and p.relative_to(folder).parts[0] not in UNHASHED_DIRS):
        digest.update(str(file.relative_to(folder)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


class ArtifactStore(dg.ConfigurableResource):
    """Where artifacts live. ``root`` defaults to $STEPCODE_HOME/artifacts; ``models`` (where the
    embedded base model is converted once) to $STEPCODE_HOME/models."""

    root: str = Field(default="", description="the artifacts' folder; empty: $STEPCODE_HOME/artifacts")
    models: str = Field(default="", description="where the embedded base model is converted once; empty: "
                        "$STEPCODE_HOME/models")

    def root_path(self) -> Path:
        return Path(self.root) if self.root else stepcode_home() / "artifacts"

    def models_path(self) -> Path:
        return Path(self.models) if self.models else stepcode_home() / "models"

    def lookup(self, asset: str, key: str) -> ArtifactRef | None:
        folder = self.root_path() / asset / key
        meta = folder / "meta.json"
        if not meta.is_file():
            return None
        content_hash = json.loads(meta.read_text())["content_hash"]
        return ArtifactRef(asset, key, str(folder), content_hash)

    def build(self, asset: str, key: str, write: Callable[[Path], dict]) -> tuple[ArtifactRef, dict]:
        """Run ``write(folder)`` into a temp folder, then publish it atomically under ``key``.
        ``write`` returns metadata to keep beside the artifact."""
        base = self.root_path() / asset
        base.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(base)
        staging = base / f".tmp-{os.getpid()}-{key}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            metadata = write(staging)
            content_hash = hash_files(staging)
            (staging / "meta.json").write_text(json.dumps({"content_hash": content_hash, "metadata": metadata}, default=str))
            final = base / key
            try:
                os.rename(staging, final)
            except OSError:  # a concurrent run published the same key first: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        ref = self.lookup(asset, key)
        assert ref is not None
        return ref, metadata

    def stored_metadata(self, ref: ArtifactRef) -> dict:
        return json.loads(ref.file("meta.json").read_text())["metadata"]


def recorded_artifact(record) -> tuple[Path, dict] | None:
    """(folder, stored metadata) of the artifact a materialization record names in its ``artifact``
    metadata; None when the record has none or the folder is gone."""
    artifact = record.asset_materialization.metadata.get("artifact")
    folder = Path(str(artifact.value)) if artifact else None
    if folder is None or not (folder / "meta.json").is_file():
        return None
    return folder, json.loads((folder / "meta.json").read_text())["metadata"]


def _remove_abandoned_staging(base: Path) -> None:
    """Delete temp folders left by a process that died mid-write (their pid no longer runs)."""
    for staging in base.glob(".tmp-*"):
        pid = staging.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(staging, ignore_errors=True)


def file_ref(path: Path, label: str) -> ArtifactRef:
    """An input file as an ArtifactRef: its content hash enters the cache keys of the assets that read it."""
    return ArtifactRef(label, "", str(path), hashlib.sha256(path.read_bytes()).hexdigest()[:20])


def png_markdown(path: Path, alt: str) -> dg.MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown with a data URL)."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")


def write_parquet(table: pa.Table, path: Path) -> None:
    """Parquet with the table's explicit schema, compressed, readable by any Arrow reader."""
    pq.write_table(table, path, compression="zstd")


def cached_output(
    context: dg.AssetExecutionContext,
    store: ArtifactStore,
    code_version: str,
    config: dict,
    inputs: list[ArtifactRef],
    write: Callable[[Path], dict],
    to_metadata: Callable[[ArtifactRef, dict, bool], dict] | None = None,
    asset: str | None = None,
) -> dg.Output:
    """The body every cached asset shares: reuse the artifact for this cache key, or build it.
    ``to_metadata(ref, stored metadata, reused)`` turns what ``write`` returned into UI metadata;
    ``asset`` names the asset when the op is one step of a graph-backed asset."""
    asset = asset or context.asset_key.to_user_string()
    key = cache_key(asset, code_version, config, inputs)
    ref = store.lookup(asset, key)
    reused = ref is not None
    if reused:
        context.log.info(f"{asset}: inputs, config and code unchanged: reusing artifact {key}")
        metadata = store.stored_metadata(ref)
    else:
        ref, metadata = store.build(asset, key, write)
    shown = to_metadata(ref, metadata, reused) if to_metadata else dict(metadata)
    shown.update({"artifact": dg.MetadataValue.path(ref.path), "cache_key": key, "reused": reused})
    return dg.Output(ref, data_version=dg.DataVersion(ref.content_hash), metadata=shown)
