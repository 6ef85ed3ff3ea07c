"""Where StepCode reads reference data and writes artifacts, and small file helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

SHARED_DATA_VARIABLE = "STEPCODE_SHARED_DATA"


class SharedDataMissing(FileNotFoundError):
    """The reference benchmark data is not configured or not where the variable says."""


def stepcode_home() -> Path:
    """Root of everything StepCode writes (artifacts, Dagster's instance): $STEPCODE_HOME, else
    ``.stepcode`` in the working directory, never inside the installed package."""
    return Path(os.environ.get("STEPCODE_HOME") or Path.cwd() / ".stepcode").resolve()


def shared_data_dir() -> Path:
    """Reference benchmark data (``cruxeval/``, ``reval/``): the folder $STEPCODE_SHARED_DATA names.
    Never guessed from where the package lies, which differs between a checkout and an installed
    wheel; ``make`` sets it to ``../shared/data`` beside the checkout."""
    configured = os.environ.get(SHARED_DATA_VARIABLE)
    if not configured:
        raise SharedDataMissing(f"${SHARED_DATA_VARIABLE} is not set: point it at the folder holding cruxeval/ "
                                "and reval/ (in a checkout, ../shared/data; the Makefile sets it)")
    folder = Path(configured).resolve()
    if not folder.is_dir():
        raise SharedDataMissing(f"${SHARED_DATA_VARIABLE} names {folder}, which is not a folder")
    return folder


def cruxeval_path() -> Path:
    return shared_data_dir() / "cruxeval" / "cruxeval.jsonl"


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it into place: a crash never
    leaves a half-written file there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list:
    """The JSON value of every non-blank line; ``path:line: not JSON`` for one that is not."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return rows
