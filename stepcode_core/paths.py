"""Where StepCode reads reference data and writes artifacts."""

from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def stepcode_home() -> Path:
    """Root of everything StepCode writes (artifacts, Dagster's instance): $STEPCODE_HOME, else
    ``.stepcode`` in the working directory, never inside the installed package."""
    return Path(os.environ.get("STEPCODE_HOME") or Path.cwd() / ".stepcode").resolve()


def shared_data_dir() -> Path:
    """Reference benchmark data (CRUXEval, REval): $STEPCODE_SHARED_DATA, else ``../shared/data``
    beside the checkout."""
    configured = os.environ.get("STEPCODE_SHARED_DATA")
    return Path(configured).resolve() if configured else (REPO_ROOT.parent / "shared" / "data").resolve()


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
