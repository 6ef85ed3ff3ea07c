"""The ``stepcode sandbox run`` command and the Dagster ``SandboxResource``."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import dagster as dg
import pytest

from pipelines.resources import SandboxResource
from sandbox import ExecutionResult


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "sandbox", "run", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_cli_runs_a_file_and_prints_one_json_line(backend, tmp_path, request):
    if backend == "docker":
        request.getfixturevalue("docker_image")
    token = "secret-" + secrets.token_hex(8)
    program = tmp_path / "prog.py"
    program.write_text("import os, sys\nprint('hi', sys.argv[0].endswith('program.py'))\nprint(dict(os.environ))\n")
    out = _cli(str(program), "--backend", backend, "--timeout", "3", "--memory-mb", "256",
               env={**os.environ, "STEPCODE_CLI_SECRET": token})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result) >= {"status", "exit_code", "stdout", "stderr", "duration_s"}
    assert result["status"] == "ok" and result["stdout"] == "hi True\n{}\n"
    assert token not in out.stdout


def test_cli_reports_failure_statuses(tmp_path):
    program = tmp_path / "loop.py"
    program.write_text("while True: pass\n")
    out = _cli(str(program), "--backend", "local", "--timeout", "0.5")
    assert out.returncode == 1
    assert json.loads(out.stdout.splitlines()[-1])["status"] == "timeout"
    missing = _cli(str(tmp_path / "nope.py"), "--backend", "local")
    assert missing.returncode == 2 and "error" in json.loads(missing.stdout.splitlines()[-1])


def test_sandbox_resource_opens_a_pool_with_its_limits():
    resource = SandboxResource(backend="local", workers=1, timeout_s=0.5, memory_mb=128)
    request = resource.request("while True: pass")
    assert (request.timeout_s, request.memory_mb) == (0.5, 128)
    with resource.open() as sb:
        result = sb.run(request)
    assert isinstance(result, ExecutionResult) and result.status == "timeout"

    @dg.asset
    def uses_sandbox(sandbox: SandboxResource) -> str:
        with sandbox.open() as sb:
            return sb.run(sandbox.request("print(40 + 2)")).stdout

    outcome = dg.materialize([uses_sandbox], resources={"sandbox": SandboxResource(backend="local", workers=1)})
    assert outcome.success and outcome.output_for_node("uses_sandbox") == "42\n"


def test_sandbox_imports_nothing_from_the_rest_of_the_project():
    code = ("import sys, sandbox, sandbox.cli, sandbox.local, sandbox.docker_backend\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('dagster', 'stepcode_core', 'pipelines')]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
