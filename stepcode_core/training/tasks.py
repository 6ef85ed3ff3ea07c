"""Training tasks from a ``trace_dataset`` artifact, and the chat messages a model is trained on."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq


def load_tasks(dataset_dir: str | Path, split: str = "train") -> list[dict]:
    """Task rows of a ``trace_dataset`` artifact (``tasks/<split>.parquet``), each with its program's
    code (from ``<split>.parquet``) and anchor policy, which the verifier needs to trace a predicted
    input."""
    folder = Path(dataset_dir)
    tasks = pq.read_table(folder / "tasks" / f"{split}.parquet").to_pylist()
    code_of = {row["program_id"]: row["code"] for row in pq.read_table(folder / f"{split}.parquet").to_pylist()}
    for row in tasks:
        row["code"] = code_of[row["program_id"]]
    return tasks


def select_tasks(tasks: list[dict], kinds: str, limit: int, seed: int) -> list[dict]:
    """The tasks of the given kinds, shuffled by ``seed``, the first ``limit`` (0: all)."""
    wanted = {kind.strip() for kind in kinds.split(",") if kind.strip()}
    chosen = [row for row in tasks if row["task"] in wanted]
    random.Random(seed).shuffle(chosen)
    return chosen[:limit] if limit else chosen


def messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]
