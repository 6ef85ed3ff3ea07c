"""``stepcode ablation``'s options for one variant on a few runs: bad input is refused before anything
starts, with what would have been accepted."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ablation(tmp_path, *arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STEPCODE_HOME": str(tmp_path / "home")}
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "ablation", *arguments], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_an_unknown_setting_or_run_is_refused_before_anything_runs(tmp_path):
    done = _ablation(tmp_path, "--model", "smollm2", "--set", "grpo_lamda=0.7")
    assert done.returncode == 2 and "unknown training settings: grpo_lamda" in done.stderr
    done = _ablation(tmp_path, "--set", "grpo_lambda=0.7", "--runs", "bilevel|0,bilevel|9")
    assert done.returncode == 2 and "no run bilevel|9" in done.stderr and "bilevel|4" in done.stderr
    done = _ablation(tmp_path, "--set", "grpo_lambda")
    assert done.returncode != 0 and "KEY=VALUE" in done.stderr
