"""Where the Dagster instance lives: DAGSTER_HOME is the project folder (it holds dagster.yaml); what
the instance writes goes under $STEPCODE_HOME/dagster."""

from __future__ import annotations

import os
from pathlib import Path

from stepcode_core.paths import stepcode_home

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # holds dagster.yaml


def dagster_environment() -> dict[str, str]:
    """Environment variables that dagster.yaml reads; existing values win."""
    home = stepcode_home()
    defaults = {
        "STEPCODE_HOME": str(home),
        "DAGSTER_HOME": str(PROJECT_ROOT),
        "STEPCODE_DAGSTER_DIR": str(home / "dagster"),
        "STEPCODE_DAGSTER_LOGS": str(home / "dagster" / "logs"),
    }
    return {key: os.environ.get(key) or value for key, value in defaults.items()}


def configure_environment() -> dict[str, str]:
    """Set the variables in this process (before Dagster loads its instance) and create the folders."""
    env = dagster_environment()
    os.environ.update(env)
    Path(env["STEPCODE_DAGSTER_LOGS"]).mkdir(parents=True, exist_ok=True)
    return env
