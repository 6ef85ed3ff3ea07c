"""The issue's acceptance check on the real benchmark: P' returns CRUXEval's output wherever P does."""

from __future__ import annotations

import statistics

import pytest

from stepcode_core.tracing.anchors import instrument
from stepcode_core.tracing.runner import TraceJob, run_traces, uninstrumented


@pytest.mark.slow
def test_every_cruxeval_program_keeps_its_output_and_reports_states(local_sandbox, cruxeval_rows):
    assert len(cruxeval_rows) == 800
    programs = [instrument(row["code"]) for row in cruxeval_rows]
    calls = [(f"f({row['input']})", row["output"]) for row in cruxeval_rows]
    plain_runs = run_traces([TraceJob(uninstrumented(row["code"]), *call) for row, call in zip(cruxeval_rows, calls)], local_sandbox)
    anchored_runs = run_traces([TraceJob(program, *call) for program, call in zip(programs, calls)], local_sandbox)

    passing_plain = [i for i, run in enumerate(plain_runs) if run.trace.matches_expected]
    assert len(passing_plain) == 800
    broken = [cruxeval_rows[i]["id"] for i in passing_plain if not anchored_runs[i].trace.matches_expected]
    assert broken == []
    differing = [
        cruxeval_rows[i]["id"]
        for i in range(800)
        if (plain_runs[i].trace.result, plain_runs[i].trace.program_stdout)
        != (anchored_runs[i].trace.result, anchored_runs[i].trace.program_stdout)
    ]
    assert differing == []

    lines = [run.trace.anchor_lines for run in anchored_runs]
    with_anchor = sum(count > 0 for count in lines) / len(lines)
    assert with_anchor >= 0.9
    print(f"CRUXEval: {with_anchor:.1%} of programs print an anchor line; "
          f"mean {statistics.mean(lines):.2f} anchor lines a program; "
          f"{sum(run.trace.over_cap for run in anchored_runs)} over the cap")
