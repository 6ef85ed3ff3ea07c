"""The anchor engine without running programs: structure, errors, the line map, the parsers, the CLI."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcode_core.tracing.anchors import (
    ANCHOR_FUNCTION,
    InstrumentationError,
    instrument,
)
from stepcode_core.tracing.runner import (
    build_trace_script,
    parse_anchor_lines,
    parse_trace,
)


def test_syntax_error_is_a_clear_instrumentation_error():
    with pytest.raises(InstrumentationError, match=r"does not parse: .* \(line 2\)"):
        instrument("def f(a):\n  return a +\n")


def test_unknown_policy_and_reserved_name_are_rejected():
    with pytest.raises(InstrumentationError, match="unknown anchor policy 'sparse'"):
        instrument("x = 1", policy="sparse")
    with pytest.raises(InstrumentationError, match="reserved name"):
        instrument(f"{ANCHOR_FUNCTION} = 1")


def test_display_and_harness_share_lines_and_differ_only_in_anchors():
    code = "def f(a, b):\n    s = a + b\n    p, q = divmod(s, 3)\n    return [p, q]\n"
    program = instrument(code)
    shown, traced = program.code.splitlines(), program.harness.splitlines()
    assert len(shown) == len(traced)
    anchor_lines = {site.instrumented_line for site in program.sites}
    for number, (left, right) in enumerate(zip(shown, traced), start=1):
        if number in anchor_lines:
            assert left.strip().startswith("print(f'") and ANCHOR_FUNCTION in right
        else:
            assert left == right
    assert "print(f'return: {_return_value!r}')" in program.code
    assert [site.name for site in program.sites] == ["s", "p", "q", "return"]


def test_return_is_unrolled_once_with_a_fresh_name():
    code = "def f(_return_value):\n    return _return_value + 1\n"
    program = instrument(code)
    tree = ast.parse(program.harness)
    stores = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)]
    assert stores == ["_return_value_1"]
    assert program.code.count("_return_value + 1") == 1


def test_no_anchor_reads_a_name_that_may_be_unbound():
    code = (
        "def f(xs, flag):\n"
        "    if flag:\n        a = 1\n    else:\n        b = 2\n"
        "    for x in xs:\n        c = x\n"
        "    try:\n        d = 1 / 0\n    except ZeroDivisionError as err:\n        pass\n"
        "    return 0\n"
    )
    names = instrument(code).site_names
    assert "c" not in names and "x" not in names and "err" not in names
    assert names == ["a", "b", "d", "return"]  # each right after its own assignment


def test_line_map_covers_every_statement_of_p_prime():
    code = "import math\n\nclass A:\n    k = 1\n    def m(self, v):\n        w = v * 2\n        return w\n\ndef f(v):\n    return A().m(v)\n"
    program = instrument(code)
    statement_lines = {n.lineno for n in ast.walk(ast.parse(program.code)) if isinstance(n, ast.stmt)}
    assert statement_lines == set(program.line_map)
    assert program.original_line(program.sites[0].instrumented_line) == 6


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise_on_arbitrary_text(text):
    program = instrument("def f(x):\n    y = x\n    return y\n")
    trace = parse_trace(text, program, "abc")
    assert trace.complete is False and trace.steps == []
    assert isinstance(parse_anchor_lines(text), list)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.text())), st.text().filter(lambda s: "\x1e" not in s))
def test_parse_trace_recovers_anchor_lines_among_program_output(entries, noise):
    program = instrument("def f(x):\n    y = x\n    return y\n")
    nonce = "feedbeef"
    stdout = noise + "".join(f"\x1e{nonce}:a:{site}:{json.dumps(value)}\n" for site, value in entries)
    trace = parse_trace(stdout, program, nonce)
    valid = [(site, value) for site, value in entries if 0 <= site < len(program.sites)]
    assert [(step.site_id, step.value) for step in trace.steps] == valid
    assert trace.program_stdout == noise


def test_parse_anchor_lines_reads_what_p_prime_prints():
    assert parse_anchor_lines("total: 3\nnot an anchor\nreturn: 'a: b'\n  x : [1]") == [
        ("total", "3"),
        ("return", "'a: b'"),
        ("x", "[1]"),
    ]


def test_trace_script_is_valid_python():
    program = instrument("def f(x):\n    y = x\n    return y\n")
    script, nonce = build_trace_script(program, "f(1)", "1")
    ast.parse(script)
    assert nonce in script


def _stepcode(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, input=stdin, timeout=60
    )


def test_cli_instrument_file(tmp_path):
    source = tmp_path / "prog.py"
    source.write_text("def f(n):\n    m = n * 2\n    return m\n")
    done = _stepcode("instrument", str(source))
    assert done.returncode == 0, done.stderr
    assert done.stdout == instrument(source.read_text()).code + "\n"
    dense = _stepcode("instrument", str(source), "--policy", "dense")
    assert dense.returncode == 0 and "print(f'm: {m!r}')" in dense.stdout


def test_cli_instrument_reports_bad_input(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    done = _stepcode("instrument", str(broken))
    assert done.returncode == 2 and done.stderr.startswith("stepcode instrument: ") and "does not parse" in done.stderr
    missing = _stepcode("instrument", "--jsonl", str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    neither = _stepcode("instrument")
    assert neither.returncode == 2 and "exactly one of FILE or --jsonl" in neither.stderr


def test_cli_instrument_jsonl(tmp_path):
    rows = [
        {"id": "sample_0", "code": "def f(a):\n    b = a + 1\n    return b\n", "input": "1", "output": "2"},
        {"id": "sample_1", "code": "def f(:\n", "input": "1", "output": "2"},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "out" / "instrumented.jsonl"
    done = _stepcode("instrument", "--jsonl", str(source), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "instrumented 1/2 rows" in done.stderr
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in written] == ["sample_0", "sample_1"]
    assert written[0]["instrumented"] == instrument(rows[0]["code"]).code
    assert written[0]["input"] == "1" and written[0]["output"] == "2"
    assert written[1]["instrumented"] is None and "does not parse" in written[1]["instrument_error"]
    assert not list(out.parent.glob(".*tmp*"))
