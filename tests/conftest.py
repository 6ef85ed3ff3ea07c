"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stepcode_core.paths import SHARED_DATA_VARIABLE, cruxeval_path

# The reference data beside the checkout, unless the caller points elsewhere (scripts/test.sh and the
# Makefile set it too); subprocesses the tests start inherit it.
os.environ.setdefault(SHARED_DATA_VARIABLE, str(Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def local_sandbox():
    """The local (namespaced, forked-worker) sandbox: every test that runs a program goes through it."""
    from sandbox import open_sandbox

    with open_sandbox(backend="local") as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def cruxeval_rows() -> list[dict]:
    path = cruxeval_path()
    if not path.is_file():
        pytest.skip(f"CRUXEval reference data not found at {path} (set STEPCODE_SHARED_DATA)")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
