"""Every script in benchmarks/ runs in its quick mode and prints its JSON line, so none can rot
unnoticed (the figures themselves are measured by `make bench`, never asserted here: the machine is
shared and noisy). A new script without a quick mode fails here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((PROJECT_ROOT / "benchmarks").glob("bench_*.py"))
# What each needs beyond the project itself: the reference data (CRUXEval) or the Docker daemon.
NEEDS_CRUXEVAL = {"bench_sandbox.py", "bench_score.py", "bench_trace.py"}
NEEDS_RAY = {"bench_ray.py"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_quick_mode_completes_and_prints_its_json_line(script, request):
    if script.name in NEEDS_CRUXEVAL:
        request.getfixturevalue("cruxeval_data")
    if script.name in NEEDS_RAY:
        request.getfixturevalue("ray_installed")
    done = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=600,
                          cwd=PROJECT_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, f"{script.name} --quick failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    last = done.stdout.strip().splitlines()[-1]
    figures = json.loads(last)
    assert isinstance(figures, dict) and figures.get("quick") is True, last
    numbers = [value for value in figures.values() if isinstance(value, (int, float)) and not isinstance(value, bool)]
    assert numbers and all(value == value for value in numbers), f"{script.name}: no figures, or NaN, in {last}"
    if script.name == "bench_grpo.py" and figures["device"] == "cpu" and figures["stages"][-1]["dtype"] == "bfloat16":
        assert figures["rollout_engine"] == "lean decode loop", last  # every change on: the trainer decoded with it


def test_make_bench_runs_only_scripts_that_exist():
    shown = subprocess.run(["make", "-n", "bench", "bench-sandbox"], capture_output=True, text=True, cwd=PROJECT_ROOT,
                           check=True).stdout
    named = set(re.findall(r"benchmarks/(bench_\w+\.py)", shown))
    assert named and named <= {path.name for path in SCRIPTS}
    assert {path.name for path in SCRIPTS} - named <= {"bench_rollout.py", "bench_grpo.py"}, \
        "a benchmark that make bench never runs"
