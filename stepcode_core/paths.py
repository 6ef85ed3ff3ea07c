"""Where StepCode reads reference data and writes artifacts."""

from __future__ import annotations

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
