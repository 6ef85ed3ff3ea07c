"""REval scoring: ground truth from our in-sandbox tracer, each kind's answer rules, Incremental
Consistency, the CLI. Accepted answers are written in the format REval parses (SEMANTICS.md)."""

from __future__ import annotations

import json

import pytest

from sandbox import open_sandbox
from stepcode_core.cli import main as stepcode
from stepcode_core.evaluation.reval import (
    KINDS,
    coverage_correct,
    extract_answer,
    ground_truth,
    ic_points,
    incremental_consistency,
    load_reval,
    path_correct,
    reference_completion,
    reval_prompt,
    score_predictions,
)

# Programs whose imports the test environment lacks (bs4, lxml, gensim): their questions are unavailable.
NEEDS_MISSING_MODULES = {"DREval/117", "DREval/149"}


@pytest.fixture(scope="module")
def programs(reval_data):
    return load_reval(reval_data / "reval")


@pytest.fixture(scope="module")
def by_id(programs):
    return {p.task_id: p for p in programs}


@pytest.fixture(scope="module")
def reval_sandbox():
    """The local sandbox run by this interpreter, so that the numpy programs load (see reval.py)."""
    with open_sandbox("local") as sandbox:
        yield sandbox


def _wrap(text: str) -> str:
    return f"Some reasoning.\n[ANSWER]\n{text}\n[/ANSWER]\n"


def _row(program, input_idx, kind, response, query_idx=None):
    row = {"task_id": program.task_id, "input_idx": input_idx, "kind": kind, "response": response}
    if kind != "output":
        q = program.task(input_idx).queries[query_idx]
        row.update(query_idx=query_idx, lineno=q.lineno, var=q.var)
    return row


def _query_idx(program, input_idx, lineno):
    return next(i for i, q in enumerate(program.task(input_idx).queries) if q.lineno == lineno)


def _summary(scored, programs):
    marks = {k: [r["correct"] for r in scored if r["kind"] == k] for k in KINDS}
    return {**{k: sum(v) / len(v) for k, v in marks.items()}, "ic": incremental_consistency(scored, programs)}


def _score(rows, programs, sandbox):
    scored, summary = score_predictions(rows, programs, sandbox)
    return [r["correct"] for r in scored], summary


# ---------------------------------------------------------------- text rules (no sandbox)

def test_extract_answer_and_coverage_rule():
    assert extract_answer("think\n[ANSWER]\nYES\n[/ANSWER]") == "YES"
    assert extract_answer("YES\n[/ANSWER]") == "YES"  # continuation of a prompt ending in [ANSWER]
    assert coverage_correct("YES", True) and coverage_correct("yes, it runs", True)
    assert coverage_correct("NO", False) and not coverage_correct("NO", True)
    assert not coverage_correct("Y", True)  # neither word: read as NO
    assert coverage_correct("Y", False)
    assert coverage_correct("YESNO", True)  # first 3 characters only: "YES"
    assert coverage_correct("NOT YES", False)  # "NOT" holds NO only


def test_path_rule_matches_code_text_not_numbers():
    code = "def f(x):\n    y = 1\n    if x:\n        y = 1\n    return y\n"
    assert path_correct("return y", [5], code)
    assert path_correct("  return y  \nmore text", [5], code)  # first line, stripped
    assert not path_correct("5", [5], code)  # a bare line number never matches
    assert path_correct("y = 1", [4], code) and path_correct("y = 1", [2], code)  # identical lines
    assert path_correct("-1", [-1], code) and not path_correct("-1", [5], code)
    assert path_correct("-1", [-1, 5], code) and path_correct("return y", [-1, 5], code)  # either successor
    assert not path_correct("", [-1], code)


def test_ic_points_reward_only_prefixes():
    assert ic_points(True, True, True, True) == 1.0
    assert ic_points(True, True, True, False) == 0.5
    assert ic_points(True, True, False, False) == 0.25
    assert ic_points(True, False, False, False) == 0.125
    assert ic_points(True, False, True, True) == 0.0  # S wrong, P right: not a prefix
    assert ic_points(False, True, True, True) == 0.0


def test_prompts_fill_every_field(by_id):
    p = by_id["DREval/85"]
    text = reval_prompt("state", "direct", p, 3, lineno=7, var="self.radius")
    assert "Line 7 (        self.radius = radius)" in text and "variable self.radius" in text
    assert "AreaCalculator(1.5)" in text and "{" + "code}" not in text
    out = reval_prompt("output", "cot", by_id["DREval/0"], 0)
    assert "assert has_close_elements([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == ??" in out
    assert out.rstrip().endswith("[THOUGHT]")
    cls = reval_prompt("output", "direct", p, 3)
    assert "# Test code starts here. Only write the completed test code in your answer.\n" \
           "areaCalculator = AreaCalculator(1.5)\nassertAlmostEqual(3.53, ??, delta=0.01)\n[/PYTHON]" in cls
    with pytest.raises(ValueError):
        reval_prompt("path", "direct", p, 3)


# ---------------------------------------------------------------- examples SEMANTICS.md cites

def test_cited_examples(programs, by_id, reval_sandbox):
    picks = [(by_id[t], by_id[t].task(i)) for t, i in
             [("DREval/112", 0), ("DREval/85", 3), ("DREval/89", 2), ("DREval/49", 1)]]
    truth = ground_truth(reval_sandbox, [p for p, _ in picks])

    def q(task_id, input_idx, lineno):
        p = by_id[task_id]
        return truth[(task_id, input_idx)]["queries"][_query_idx(p, input_idx, lineno)]

    # a constructor called only in setUp is not executed: setUp is not traced
    assert q("DREval/112", 0, 9)["covered"] is False and q("DREval/112", 0, 9)["values"] == []
    # read at the first line of the next method the test calls
    assert q("DREval/85", 3, 7)["values"] == [["1.5", "float"]]
    # cross-frame successors: __init__ and display. REval (CPython 3.10) has [3, 26]; 3.11 emits a line
    # event on the `def display` line, so ours is [3, 25] (one of the 2 documented 3.11 differences)
    assert q("DREval/89", 2, 23)["path"] == [3, 25]
    # executed, but the next line's comprehension frame overwrote the locals: Nil
    assert q("DREval/49", 1, 14)["covered"] is True and q("DREval/49", 1, 14)["values"] == []

    p112, p85, p89, p49 = (by_id[t] for t in ("DREval/112", "DREval/85", "DREval/89", "DREval/49"))
    rows = [
        _row(p112, 0, "coverage", _wrap("NO"), _query_idx(p112, 0, 9)),
        _row(p112, 0, "coverage", _wrap("YES"), _query_idx(p112, 0, 9)),
        _row(p112, 0, "state", _wrap("Nil"), _query_idx(p112, 0, 9)),
        _row(p85, 3, "state", _wrap("1.5; float"), 0),
        _row(p85, 3, "state", _wrap("1.5000000001; <class 'float'>"), 0),  # float tolerance 1e-6
        _row(p85, 3, "state", _wrap("1.5; int"), 0),
        _row(p85, 3, "state", _wrap("Nil"), 0),
        _row(p89, 2, "path", _wrap("self.play_text = text"), _query_idx(p89, 2, 23)),
        _row(p89, 2, "path", _wrap("def display(self, key, value):"), _query_idx(p89, 2, 23)),
        _row(p89, 2, "path", _wrap("3"), _query_idx(p89, 2, 23)),
        _row(p89, 2, "path", _wrap("-1"), _query_idx(p89, 2, 23)),
        _row(p49, 1, "state", _wrap("Nil"), _query_idx(p49, 1, 14)),
        _row(p49, 1, "state", _wrap("(5, False); tuple"), _query_idx(p49, 1, 14)),
    ]
    marks, _ = _score(rows, programs, reval_sandbox)
    assert marks == [True, False, True, True, True, False, False, True, True, False, False, True, False]


# ---------------------------------------------------------------- REval's own rules, not our tracer's output

def test_return_entries_and_last_entry_follow_reval(programs, by_id, reval_sandbox):
    """Written from REval's rules, not from our tracer: REval's trace records a function's return as
    an entry of its own when it comes from another line than the last entry (here ``__init__``
    returns at line 4 after ``clean_non_binary_chars`` ran line 7), and that entry has no variables;
    a line that is the run's last entry has -1 among its successors."""
    p = by_id["DREval/94"]
    line7 = p.code.split("\n")[6].strip()
    assert line7.startswith("self.binary_string = ''.join(filter(")
    cleaned = "'0110100001100101011011000110110001101111'; str"
    rows = [
        # input 0 ends in the constructor: line 4 runs (7 follows), then returns (the last entry)
        _row(p, 0, "path", _wrap("-1"), _query_idx(p, 0, 4)),
        _row(p, 0, "path", _wrap(line7), _query_idx(p, 0, 4)),
        _row(p, 0, "path", _wrap(p.code.split("\n")[9].strip()), _query_idx(p, 0, 4)),  # line 10: not run
    ]
    for input_idx in (1, 2, 3):
        # line 7 is read at the constructor's return entry, which holds no variables: Nil
        rows += [_row(p, input_idx, "state", _wrap("Nil"), _query_idx(p, input_idx, 7)),
                 _row(p, input_idx, "state", _wrap(cleaned), _query_idx(p, input_idx, 7))]
    marks, _ = _score(rows, programs, reval_sandbox)
    assert marks == [True, True, False] + [True, False] * 3


_EVENT_PROBE = """
import json, sys
namespace = {}
exec(compile(CODE, "<internals>", "exec"), namespace)
sim = namespace["AutomaticGuitarSimulator"]("C53231323")
events = []
def trace(frame, event, arg):
    if frame.f_code.co_filename != "<internals>":
        return None
    events.append([event, frame.f_lineno])
    return trace
sys.settrace(trace)
sim.display("C", "53231323")
sys.settrace(None)
print(json.dumps({"version": list(sys.version_info[:2]), "events": events}))
"""


def test_the_python_311_difference_is_the_interpreter_s_line_event(by_id, reval_sandbox):
    """DREval/89 input 2, line 23 ``return play_list``: REval's rule takes the next trace entry, here the
    first line event of ``display`` (line 25 ``def``, line 26 its ``return``). CPython 3.10 (REval's)
    emits none on the ``def`` line, so REval's answer is [3, 26]; 3.11 emits one, so the same rule gives
    [3, 25]. This is one of the 2 Path answers (of 3152) that differ for that reason alone."""
    from sandbox import ExecutionRequest

    p = by_id["DREval/89"]
    probe = f"CODE = {p.code!r}\n" + _EVENT_PROBE
    result = reval_sandbox.run(ExecutionRequest(code=probe, timeout_s=10))
    assert result.status == "ok", result.stderr
    seen = json.loads(result.stdout)
    truth = ground_truth(reval_sandbox, [p])
    path = truth[("DREval/89", 2)]["queries"][_query_idx(p, 2, 23)]["path"]
    if seen["version"] == [3, 10]:
        assert seen["events"] == [["call", 25], ["line", 26], ["return", 26]] and path == [3, 26]
    else:
        assert seen["version"] == [3, 11]
        assert seen["events"] == [["call", 25], ["line", 25], ["line", 26], ["return", 26]] and path == [3, 25]


def _python310() -> str | None:
    """A CPython 3.10 interpreter's real path, or None. Launcher scripts such as pyenv shims are resolved
    (they do not run inside the sandbox's root)."""
    import glob
    import os
    import shutil
    import subprocess

    candidates = [os.environ.get("STEPCODE_PYTHON310"), shutil.which("python3.10"),
                  *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 10), sys.executable)"],
                               capture_output=True, text=True)
        ok, _, executable = probe.stdout.strip().partition(" ")
        if probe.returncode == 0 and ok == "True":
            return executable
    return None


def test_under_python_310_the_tracer_gives_reval_s_answer(by_id):
    """Where a CPython 3.10 interpreter is installed, the same tracer run by it gives REval's [3, 26]."""
    from sandbox.local import LocalBackend
    from sandbox.pool import Sandbox

    python310 = _python310()
    if python310 is None:
        pytest.skip("no CPython 3.10 found ($STEPCODE_PYTHON310, python3.10 on PATH, pyenv)")
    p = by_id["DREval/89"]
    with Sandbox(LocalBackend(python=python310, site_dirs=[]), 1) as sandbox:
        truth = ground_truth(sandbox, [p])
    assert truth[("DREval/89", 2)]["ok"], truth[("DREval/89", 2)]
    assert truth[("DREval/89", 2)]["queries"][_query_idx(p, 2, 23)]["path"] == [3, 26]


# ---------------------------------------------------------------- State parsing and Output execution

def test_state_answer_forms_and_hostile_answers(programs, by_id, reval_sandbox):
    p112, p86, p100 = by_id["DREval/112"], by_id["DREval/86"], by_id["DREval/100"]
    op_stack = _query_idx(p112, 0, 64)
    rows = [
        _row(p112, 0, "state", _wrap("[',', '+']; collections.deque"), op_stack),  # deque(eval(..))
        _row(p112, 0, "state", _wrap("[',', '+']; list"), op_stack),  # wrong type
        _row(p112, 0, "state", _wrap("['+', ',']; collections.deque"), op_stack),  # wrong value
        _row(p86, 0, "state", _wrap("int; type"), _query_idx(p86, 0, 35)),  # the class int
        _row(p100, 3, "state", _wrap("1900-01-01 10:00:00; datetime.datetime"), 0),  # via dateutil
        _row(p100, 3, "state", _wrap("1900-01-01 10:05:00; datetime.datetime"), 0),
        _row(p112, 0, "state", _wrap("__import__('os')._exit(0); int"), op_stack),  # kills its own child only
        _row(p112, 0, "state", _wrap("[x for x in iter(int, 1)]; list"), op_stack),  # hangs: time limit
        _row(p112, 0, "state", _wrap("no separator"), op_stack),
    ]
    marks, summary = _score(rows, programs, reval_sandbox)
    assert marks == [True, False, False, True, True, False, False, False, False]
    assert summary["state"] == pytest.approx(3 / 9) and summary["unavailable"] == []


def test_output_is_executed(programs, by_id, reval_sandbox):
    p0, p85 = by_id["DREval/0"], by_id["DREval/85"]
    question = p0.task(0).question
    multi = next(p for p in programs if p.is_classeval and all(t.question.count("??") > 1 for t in p.tasks[:1]))
    right_multi = reference_completion(multi, multi.tasks[0].input_idx)
    rows = [
        _row(p0, 0, "output", _wrap(question.replace("??", "True"))),
        _row(p0, 0, "output", _wrap(question.replace("??", "1 == 1"))),  # any passing assert is accepted
        _row(p0, 0, "output", _wrap(question.replace("??", "False"))),
        _row(p0, 0, "output", _wrap("assert True")),
        _row(p0, 0, "output", _wrap("import os; os._exit(0)")),  # no assert: fails without running
        _row(p85, 3, "output", _wrap(reference_completion(p85, 3))),
        _row(p85, 3, "output", _wrap("assertAlmostEqual(3.53, 3.535, delta=0.01)")),  # padded with line 1
        _row(p85, 3, "output", _wrap("areaCalculator = AreaCalculator(1.5)\nassertAlmostEqual(3.53, 4.0, delta=0.01)")),
        _row(multi, multi.tasks[0].input_idx, "output", _wrap(right_multi)),
        _row(multi, multi.tasks[0].input_idx, "output", _wrap(right_multi.split("\n")[0])),  # too few asserts
    ]
    marks, summary = _score(rows, programs, reval_sandbox)
    assert marks == [True, True, False, False, False, True, True, False, True, False]
    assert summary["output"] == pytest.approx(5 / 10)


# ---------------------------------------------------------------- CLI

def test_cli_scores_and_rejects_bad_input(tmp_path, by_id, capsys):
    p = by_id["DREval/0"]
    rows = [_row(p, 0, "coverage", _wrap("YES"), 0), _row(p, 0, "coverage", _wrap("NO"), 1),
            _row(p, 0, "state", _wrap("0.2; float"), 0), _row(p, 0, "path", _wrap("-1"), 0),
            _row(p, 0, "path", _wrap("-1"), 1),
            _row(p, 0, "output", _wrap(p.task(0).question.replace("??", "True")))]
    preds, out = tmp_path / "preds.jsonl", tmp_path / "scored.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stepcode(["score", "reval", str(preds), "--out", str(out), "--backend", "local"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["correct"] for r in scored] == [True, False, True, True, False, True]
    assert set(KINDS) <= set(summary) and summary["coverage"] == 0.5 and summary["output"] == 1.0
    # query 0 is right in all four tasks (1 point), query 1 has C wrong (0): IC 50
    assert summary["ic"] == pytest.approx(50.0)

    bad = tmp_path / "bad.jsonl"
    for text in ("not json\n", json.dumps({**rows[0], "kind": "trace"}) + "\n",
                 json.dumps({**rows[0], "lineno": 3}) + "\n", json.dumps({**rows[0], "task_id": "DREval/999"}) + "\n",
                 json.dumps({k: v for k, v in rows[0].items() if k != "response"}) + "\n", ""):
        bad.write_text(text)
        assert stepcode(["score", "reval", str(bad)]) == 2
        assert "stepcode score reval: " in capsys.readouterr().err


@pytest.mark.docker
def test_cli_scores_on_the_docker_backend(tmp_path, by_id, capsys):
    """REval's items ask for memory the Docker pool accepts, and numpy (DREval/122 loads it) is there."""
    from sandbox.docker_backend import docker_unavailable_reason

    if (reason := docker_unavailable_reason()) is not None:
        pytest.skip(reason)
    p0, p122 = by_id["DREval/0"], by_id["DREval/122"]
    rows = [_row(p0, 0, "output", _wrap(p0.task(0).question.replace("??", "True"))),
            _row(p122, p122.tasks[0].input_idx, "output", _wrap(reference_completion(p122, p122.tasks[0].input_idx)))]
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert stepcode(["score", "reval", str(preds), "--backend", "docker"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == 1.0


# ---------------------------------------------------------------- the whole dataset

@pytest.mark.slow
def test_full_dataset_accepted_and_wrong_answers(programs, reval_sandbox):
    """Every question of DREval. With bs4, lxml and gensim available to the sandbox (site-packages or
    the sandbox's package folders) the counts are REval's own: 1694 executed / 1458 not, 18 State questions
    with no acceptable answer, IC 99.43. Without them DREval/117 and 149 are unavailable and the
    numbers are those of the other 152 programs."""
    truth = ground_truth(reval_sandbox, programs, want_accepted=True)
    unavailable = {k for k, r in truth.items() if not r["ok"]}
    assert {k[0] for k in unavailable} <= NEEDS_MISSING_MODULES
    assert all("ModuleNotFoundError" in truth[k]["error"] for k in unavailable)
    assert all(r["error"] is None for r in truth.values() if r["ok"])  # every input runs cleanly
    usable = [p for p in programs if p.task_id not in {k[0] for k in unavailable}]
    n_queries = sum(len(t.queries) for p in usable for t in p.tasks)

    right, wrong = [], []
    for p in usable:
        lines = p.code.split("\n")
        for t in p.tasks:
            report = truth[(p.task_id, t.input_idx)]
            for i, (q, gt) in enumerate(zip(t.queries, report["queries"])):
                right.append(_row(p, t.input_idx, "coverage", _wrap("YES" if gt["covered"] else "NO"), i))
                wrong.append(_row(p, t.input_idx, "coverage", _wrap("NO" if gt["covered"] else "YES"), i))
                # no accepted answer: values whose class name has capitals, or a dict holding an ndarray
                right.append(_row(p, t.input_idx, "state", _wrap(gt["accepted"] or "Nil"), i))
                wrong.append(_row(p, t.input_idx, "state", _wrap("Nil" if gt["values"] else "1; int"), i))
                succ = gt["path"][0]
                right.append(_row(p, t.input_idx, "path", _wrap("-1" if succ == -1 else lines[succ - 1].strip()), i))
                wrong.append(_row(p, t.input_idx, "path",
                                  _wrap(lines[q.lineno - 1].strip() if succ == -1 else "-1"), i))
            value = None if p.is_classeval else report["value_repr"]
            right.append(_row(p, t.input_idx, "output", _wrap(reference_completion(p, t.input_idx, value))))
            wrong.append(_row(p, t.input_idx, "output",
                              _wrap(t.question if p.is_classeval else t.question.replace("??", "object()"))))

    # one scoring pass for both sets (each (program, input) is traced once)
    scored_all, _ = score_predictions(right + wrong, programs, reval_sandbox)
    scored, scored_wrong = scored_all[: len(right)], scored_all[len(right):]
    summary = _summary(scored, programs)
    no_state = [(r["task_id"], r["input_idx"]) for r in scored if r["kind"] == "state" and not r["correct"]]
    assert {t for t, _ in no_state} <= {"DREval/117", "DREval/127"}
    assert summary["coverage"] == 1.0 and summary["path"] == 1.0 and summary["output"] == 1.0
    assert summary["state"] == pytest.approx(1 - len(no_state) / n_queries)
    executed = sum(r["response"].startswith("Some reasoning.\n[ANSWER]\nYES") for r in right if r["kind"] == "coverage")
    if not unavailable:  # REval's own numbers (SEMANTICS.md), not counts taken from our tracer
        assert n_queries == 3152 and executed == 1694 and len(no_state) == 18
        reports = [q for r in truth.values() for q in r["queries"]]
        assert sum(-1 in q["path"] for q in reports if q["covered"]) == 391  # the run's last entry
        assert sum(len(q["path"]) > 1 for q in reports) == 54  # several successors
        assert sum(q["covered"] and not q["values"] for q in reports) == 123  # executed, yet Nil
        assert sum(len({tuple(v) for v in q["values"]}) > 1 for q in reports) == 574  # several values
        assert summary["state"] == pytest.approx(0.99429, abs=1e-5)
        assert summary["ic"] == pytest.approx(99.43, abs=0.005)
    else:  # the 152 programs without bs4/gensim: 3 unanswerable State questions (DREval/127)
        assert n_queries == 3070 and len(no_state) == 3
        # an unanswerable State question breaks the C,S,P,O prefix: C right, S wrong, P and O right = 0
        assert summary["ic"] == pytest.approx(100 * (1 - 3 / 3070))

    summary_wrong = _summary(scored_wrong, programs)
    assert all(summary_wrong[k] == 0.0 for k in KINDS), summary_wrong
    assert summary_wrong["ic"] == 0.0
