"""Every recorded step is a state the original program really had, held against an oracle that
shares nothing with the tracer: ``sys.settrace`` with opcode events on P itself (not P'), run in the
sandbox, snapshotting each frame's variables after every opcode. Plus the failures the first outside
corpus found: phantom steps from a ``__repr__`` with anchors, deterministic programs dropped for a
memory address in a repr, a recording that changes what the program does."""

from __future__ import annotations

import json
import textwrap

import pytest

from sandbox import ExecutionRequest
from stepcode_core.data.dataset import FilterConfig, drop_reason, trace_job, trace_record
from stepcode_core.data.sources import from_path
from stepcode_core.tracing.anchors import instrument
from stepcode_core.tracing.runner import TraceJob, run_traces
from tests.core.tricky_programs import FUNCTIONS, PROGRAMS

ORACLE = '''
import json, re, sys
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+(?=>)")
def stable(value):
    try:
        return ADDRESS.sub("", repr(value))
    except Exception as exc:
        return "<repr failed: " + type(exc).__name__ + ">"
import itertools
events, frames, returned, calls = [], {}, {}, itertools.count()
def local(frame, event, arg):
    if event in ("line", "opcode", "return"):
        seen = {**frame.f_globals, **frame.f_locals}  # a global statement assigns the module's names
        names = {k: stable(v) for k, v in seen.items() if not (k.startswith("__") and k.endswith("__"))}
        number = frames.get(id(frame))
        events.append([frame.f_lineno, event, names, number])
        if event == "return":
            returned[number] = stable(arg)
    return local
def tracer(frame, event, arg):
    if frame.f_code.co_filename != "<P>":
        return None
    frames[id(frame)] = next(calls)  # a number per call (the ids of dead frames are reused)
    frame.f_trace_opcodes = True
    return local
code = compile(SOURCE, "<P>", "exec")
namespace = {"__name__": "__main__"}
result = None
sys.settrace(tracer)
try:
    exec(code, namespace)
    if CALL is not None:
        value = eval(compile(CALL, "<call>", "eval"), namespace)
finally:
    sys.settrace(None)
if CALL is not None:
    result = stable(value)
sys.stdout.write("\\x1eORACLE" + json.dumps([events, returned, result]) + "\\n")
'''


def oracle_events(sandbox, sources: list[str], calls: list[str | None] | None = None) -> list[list]:
    """Per program: the events of P run under the oracle, the values its calls returned, and the
    value of ``call`` (None for a script)."""
    calls = calls or [None] * len(sources)
    requests = [ExecutionRequest(code=f"SOURCE = {source!r}\nCALL = {call!r}\n" + ORACLE, timeout_s=60, memory_mb=1024)
                for source, call in zip(sources, calls)]
    events = []
    for result in sandbox.run_batch(requests):
        assert result.status == "ok", result.stderr[-2000:]
        events.append(json.loads(result.stdout.rsplit("\x1eORACLE", 1)[1]))
    return events


def unexplained_steps(steps: list[dict], oracle: list) -> list[dict]:
    """The steps no oracle event explains, matched in order: a step ``name: value`` at line L must be
    the value of ``name`` in a frame right after an opcode of line L; a ``return`` step at line L, an
    opcode of line L in a call that then returned that value (a ``finally`` may run in between)."""
    events, returned, _ = oracle
    missing, position = [], 0
    for step in steps:
        for index in range(position, len(events)):
            line, event, names, frame = events[index]
            previous_line = events[index - 1][0] if index else None
            if step["name"] == "return":
                hit = line == step["line"] and returned.get(str(frame)) == step["value"]
            else:
                hit = step["line"] in (line, previous_line) and names.get(step["name"]) == step["value"]
            if hit:
                position = index + 1
                break
        else:
            missing.append(step)
    return missing


@pytest.fixture(scope="module")
def corpus_traces(local_sandbox, tmp_path_factory):
    """The corpus through the ``files`` source (a folder of scripts), instrumented and traced twice
    in two interpreters, as the data stage does."""
    folder = tmp_path_factory.mktemp("corpus")
    for name, source in PROGRAMS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip())
    functions = tmp_path_factory.mktemp("functions") / "functions.jsonl"
    functions.write_text("".join(json.dumps({"id": name, "code": code.lstrip(), "input": call}) + "\n"
                                 for name, (code, call) in FUNCTIONS.items()))
    rows = [program.to_row() for program in [*from_path(folder), *from_path(functions)]]
    for row in rows:
        program = instrument(row["code"])
        row.update(instrumented_code=program.code, policy="paper", program=program)
    runs = run_traces([trace_job(row, row["program"]) for row in rows], local_sandbox, cross_check=True)
    return rows, runs


def test_every_recorded_step_is_a_state_of_the_original_program(local_sandbox, corpus_traces):
    rows, runs = corpus_traces
    calls = [f"{row['entry_point']}({row['input']})" if row["entry_point"] else None for row in rows]
    events = oracle_events(local_sandbox, [row["code"] for row in rows], calls)
    checked = 0
    for row, run, program_events in zip(rows, runs, events):
        record = trace_record(row, run)
        assert record["result"] == program_events[2], (row["program_id"], record["result"], program_events[2])
        assert run.status == "ok" and record["error"] is None, (row["program_id"], run.stderr[-500:])
        assert record["deterministic"] and not record["unstable_repr"], (row["program_id"], record["nondeterminism"])
        assert record["same_as_original"] is True, (row["program_id"], record["original_difference"])
        assert drop_reason(record, FilterConfig(max_anchor_lines=100), None) == (None, None), row["program_id"]
        assert record["steps"], row["program_id"]
        assert unexplained_steps(record["steps"], program_events) == [], row["program_id"]
        checked += len(record["steps"])
    assert len(rows) == len(PROGRAMS) + len(FUNCTIONS) and checked > 200


def test_the_oracle_catches_a_step_the_program_never_had(local_sandbox, corpus_traces):
    """The oracle can fail: a value changed, a phantom step, a step out of order are all caught."""
    rows, runs = corpus_traces
    index = next(i for i, row in enumerate(rows) if row["program_id"].endswith("closures_nonlocal.py"))
    steps = trace_record(rows[index], runs[index])["steps"]
    (events,) = oracle_events(local_sandbox, [rows[index]["code"]])
    assert unexplained_steps(steps, events) == []
    forged = dict(steps[-1], value="8")
    assert unexplained_steps(steps[:-1] + [forged], events) == [forged]
    phantom = {"name": "text", "value": "'x'", "line": 2}
    assert unexplained_steps(steps[:2] + [phantom] + steps[2:], events) == [phantom]
    assert unexplained_steps(list(reversed(steps)), events) != []


def _trace(local_sandbox, code: str, call: str | None = None, **kwargs):
    (run,) = run_traces([TraceJob(instrument(textwrap.dedent(code)), call)], local_sandbox, **kwargs)
    return run


def test_a_repr_with_anchors_adds_no_phantom_steps(local_sandbox):
    run = _trace(local_sandbox, """
        class Point:
            def __init__(self, x):
                self.x = x
            def __repr__(self):
                text = f"Point({self.x})"
                return text
        def f(n):
            p = Point(n)
            q = [p, Point(n + 1)]
            return q
    """, "f(1)", cross_check=True)
    assert [(s.name, s.value) for s in run.trace.steps] == [
        ("p", "Point(1)"), ("q", "[Point(1), Point(2)]"), ("return", "[Point(1), Point(2)]")]
    assert run.trace.result == "[Point(1), Point(2)]" and run.trace.anchor_lines == 3


def test_default_reprs_are_recorded_without_their_address_and_kept(local_sandbox):
    run = _trace(local_sandbox, """
        class Node:
            pass
        def make():
            def inc(x):
                return x + 1
            return inc
        def gen():
            yield 1
        def f():
            node = Node()
            adder = make()
            items = gen()
            view = memoryview(b"ab")
            return node
    """, "f()", cross_check=True)
    values = [s.value for s in run.trace.steps]
    assert values[:1] == ["<__main__.Node object>"]
    assert "<function make.<locals>.inc>" in values and "<generator object gen>" in values and "<memory>" in values
    assert run.trace.result == "<__main__.Node object>"
    assert run.trace.deterministic is True and not run.trace.unstable_repr


def test_a_repr_with_side_effects_is_dropped_as_changed_by_anchors(local_sandbox):
    code = """
        class Counter:
            shown = 0
            def __repr__(self):
                Counter.shown += 1
                return "Counter()"
        def f():
            c = Counter()
            return Counter.shown
    """
    run = _trace(local_sandbox, code, "f()", cross_check=True)
    assert run.trace.same_as_original is False and "result" in run.trace.original_difference
    row = {"program_id": "p", "source": "test", "entry_point": "f", "code": code, "instrumented_code": "x",
           "policy": "paper", "input": "", "output": None}
    assert drop_reason(trace_record(row, run), FilterConfig(), None) == ("changed_by_anchors", None)


def test_unstable_reprs_and_nondeterminism_are_told_apart(local_sandbox):
    unstable = """
        class Handle:
            def __repr__(self):
                return f"Handle({hex(id(self))})"
        def f():
            h = Handle()
            return 1
    """
    random = "import random\ndef f():\n    k = random.random()\n    return k < 2\n"
    hash_order = "def f():\n    seen = list({'apple', 'pear', 'fig', 'kiwi', 'plum', 'lime'})\n    return len(seen)\n"
    jobs = [TraceJob(instrument(textwrap.dedent(unstable)), "f()"), TraceJob(instrument(random), "f()"),
            TraceJob(instrument(hash_order), "f()")]
    for checked in (dict(cross_check=True), dict(cross_check=False)):
        if not checked["cross_check"]:
            jobs = [TraceJob(job.program, job.call, repeats=2) for job in jobs]
        handle, drawn, ordered = (run.trace for run in run_traces(jobs, local_sandbox, **checked))
        assert handle.deterministic is False and handle.unstable_repr is True, handle.nondeterminism
        assert drawn.deterministic is False and drawn.unstable_repr is False
        assert drawn.nondeterminism.startswith("the runs differ in steps") and "0." in drawn.nondeterminism
        if checked["cross_check"]:  # string hashing changes only between interpreters
            assert ordered.deterministic is False and not ordered.unstable_repr and "steps" in ordered.nondeterminism
