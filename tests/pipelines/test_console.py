"""The terminal commands' output: the compact logger prints one line per message (time, asset,
message) and a failure with its error; the progress bars of the libraries are off in `stepcode`."""

import re
import subprocess
import sys

import dagster as dg

from pipelines.console import COMPACT_LOGGING, compact_console


@dg.asset
def talkative(context: dg.AssetExecutionContext) -> int:
    context.log.info("step 1/2: loss 0.5")
    context.log.debug("not shown at INFO")
    return 1


@dg.asset
def failing(talkative: int) -> int:
    raise ValueError("planted failure")


def test_compact_lines_and_errors(capsys):
    defs = dg.Definitions(assets=[talkative, failing], loggers={"compact_console": compact_console})
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(run_config=COMPACT_LOGGING, raise_on_error=False)
    assert not result.success
    lines = capsys.readouterr().out.splitlines()
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d talkative: step 1/2: loss 0\.5", line) for line in lines)
    assert not any("not shown" in line for line in lines)
    assert any(line.startswith(("failing", "dagster")) or " failing: " in line for line in lines)
    assert "planted failure" in "\n".join(lines)
    assert not any(result.run_id in line for line in lines)  # no run ids in the terminal


def test_stepcode_turns_progress_bars_off():
    code = "import os, pipelines.cli; print(os.environ['TQDM_DISABLE'], os.environ['HF_HUB_DISABLE_PROGRESS_BARS'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout
    assert out.split() == ["1", "1"]
