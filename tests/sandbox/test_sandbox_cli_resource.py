"""The ``stepcode sandbox run`` and ``run-batch`` commands and the Dagster ``SandboxResource``."""

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


def _cli(*args, env=None, command="run", stdin=None):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "sandbox", command, *args], capture_output=True,
                          text=True, env=env, timeout=300, input=stdin)


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
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.startswith("stepcode sandbox run: ") and "nope.py" in missing.stderr


@pytest.mark.parametrize("backend", ["local", pytest.param("docker", marks=pytest.mark.docker)])
def test_run_batch_prints_one_result_per_row_in_order(backend, tmp_path, request):
    if backend == "docker":
        request.getfixturevalue("docker_image")
    rows = [{"code": "print(input())", "stdin": "first\n"},
            {"code": "while True: pass", "timeout_s": 0.5},
            {"code": "x = bytearray(600 << 20)", "memory_mb": 256},
            {"code": "import sys; print('to err', file=sys.stderr); sys.exit(3)"},
            {"code": "import os\nprint(sorted(os.listdir('/tmp')), dict(os.environ))"}]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")
    out = _cli(str(path), "--backend", backend, command="run-batch")
    assert out.returncode == 0, out.stderr
    results = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(set(r) >= {"status", "exit_code", "stdout", "stderr", "duration_s"} for r in results)
    assert [r["status"] for r in results] == ["ok", "timeout", "memory", "error", "ok"]
    assert results[0]["stdout"] == "first\n" and results[3]["stderr"] == "to err\n"
    assert results[4]["stdout"] == "['run'] {}\n"  # nothing of the earlier rows, no environment
    piped = _cli("-", "--backend", backend, command="run-batch", stdin=json.dumps(rows[0]) + "\n")
    assert [json.loads(line)["stdout"] for line in piped.stdout.splitlines()] == ["first\n"]


def test_run_batch_rejects_bad_rows_before_running_any(tmp_path):
    path = tmp_path / "in.jsonl"
    for text, message in [("not json\n", "in.jsonl:1: not JSON"),
                          ('{"code": "print(1)"}\n{"stdin": "x"}\n', "in.jsonl:2: expected an object with a 'code'"),
                          ('{"code": "print(1)", "timeout": 3}\n', "unknown field(s) timeout"),
                          ('{"code": "print(1)", "timeout_s": -1}\n', "in.jsonl:1: timeout_s must be"),
                          ("\n", "no rows")]:
        path.write_text(text)
        out = _cli(str(path), "--backend", "local", command="run-batch")
        assert out.returncode == 2 and out.stdout == "", (text, out)
        assert out.stderr.startswith("stepcode sandbox run-batch: ") and message in out.stderr, (text, out.stderr)


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
