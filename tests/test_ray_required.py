"""The Ray tests skip where Ray is missing, except under CI, where they fail: a CI machine without the
ray extra must not pass its Ray tests by skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
A_RAY_TEST = "tests/pipelines/test_kuberay_spec.py::test_dagster_rays_kuberay_cluster_takes_the_spec_as_it_is"


@pytest.mark.parametrize("ci", [False, True], ids=["developer", "CI"])
def test_ray_tests_skip_without_ray_but_fail_under_ci(tmp_path, ci):
    hidden = tmp_path / "no-ray" / "ray"  # first on the path: `import ray` finds this and fails
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('ray is hidden by this test')\n")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(hidden.parent), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "true"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "ray", "-p", "no:cacheprovider", A_RAY_TEST],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    if ci:
        assert done.returncode == 1 and "1 error" in done.stdout and "ray is hidden" in done.stdout, done.stdout[-2000:]
    else:
        assert done.returncode == 0 and "1 skipped" in done.stdout, done.stdout[-2000:]
