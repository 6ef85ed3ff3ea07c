"""A local worker whose interpreter lives under /tmp (a checkout cloned there, with its .venv) keeps
seeing it from run to run, although /tmp inside the sandbox is scratch space wiped after every run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandbox import ExecutionRequest, open_sandbox


@pytest.mark.skipif(os.geteuid() != 0, reason="the isolated local backend needs root")
def test_interpreter_under_tmp_survives_the_scratch_wipe(tmp_path):
    assert str(tmp_path).startswith("/tmp/")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    probe = f"import os\nprint(sorted(os.listdir({str(venv)!r})))\n"
    with open_sandbox(backend="local", workers=1, local_options={"python": str(venv / "bin" / "python")}) as sandbox:
        first, second, third = sandbox.run_batch([ExecutionRequest(code=probe)] * 3)
    for result in (first, second, third):
        assert result.status == "ok", result.stderr
        assert result.stdout.strip() == repr(sorted(os.listdir(venv)))
