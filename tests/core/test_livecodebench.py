"""LiveCodeBench code execution scored as LiveCodeBench's own harness scores it. The expected
numbers are worked out by hand from LCB's rules (lcb_runner/evaluation/compute_code_execution_metrics.py),
not produced by the code under test."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from sandbox import open_sandbox
from sandbox.docker_backend import docker_unavailable_reason
from stepcode_core.evaluation import livecodebench


@pytest.fixture(scope="module", params=["local", pytest.param("docker", marks=pytest.mark.docker)])
def sb(request):
    """Both backends: LCB's imports need numpy and pandas in either."""
    if request.param == "docker" and (reason := docker_unavailable_reason()) is not None:
        pytest.skip(f"Docker tests need a daemon: {reason}")
    with open_sandbox(request.param, workers=2) as sandbox:
        yield sandbox

def lcb_row(sample: int, question: str, name: str, code: str, call: str, output: str) -> dict:
    """A row in LiveCodeBench's execution schema (``livecodebench/execution-v2``)."""
    return {"question_id": question, "contest_id": "weekly-contest-361", "contest_date": "2023-09-03T00:00:00",
            "difficulty": "easy", "function_name": name, "code": code, "input": call, "output": output,
            "id": f"sample_{sample}", "problem_id": question, "numsteps": 100}


# Two samples per question, as in LCB's data: question_id repeats, the sample id is the key. LCB's
# programs annotate with typing names and use collections and numpy without importing them.
ROWS = [
    lcb_row(0, "2917", "countPairs",
            "def countPairs(nums: List[int], target: int) -> int:\n    n = len(nums)\n    ans = 0\n"
            "    for i in range(n):\n        for j in range(i + 1, n):\n            if nums[i] + nums[j] < target:\n"
            "                ans += 1\n    return ans",
            "countPairs(nums = [-1, 1, 2, 3, 1], target = 2)", "3"),
    lcb_row(1, "2917", "countPairs",
            "def countPairs(nums: List[int], target: int) -> int:\n    return sum(a + b < target for a, b in "
            "combinations(nums, 2))",
            "countPairs(nums = [-6, 2, 5, -2, -7, -1, 3], target = -2)", "10"),
    lcb_row(2, "2845", "mostFrequent",
            "def mostFrequent(s: str) -> str:\n    c = Counter(s)\n    return max(sorted(c), key=c.get)",
            "mostFrequent(s = 'abca')", "'a'"),
    lcb_row(3, "2845", "mostFrequent", "def mostFrequent(s: str) -> str:\n    return sorted(s)[0]",
            "mostFrequent(s = 'cab')", "'a'"),
    lcb_row(4, "2999", "total", "def total(nums: List[int]) -> int:\n    return int(np.sum(np.array(nums)))",
            "total(nums = [1, 2, 3])", "6"),
    lcb_row(5, "2999", "total", "def total(nums: List[int]) -> int:\n    return sum(x * x for x in nums)",
            "total(nums = [1, 2, 3])", "14"),
]
GENERATIONS = {  # verdicts worked out by hand from LCB's rules
    # 3 right, 4 wrong, the third repeats the input: skipped, so n = 2, c = 1: 1/2
    "sample_0": ["3", "4", "countPairs(nums = [-1, 1, 2, 3, 1], target = 2)"],
    # the same question's other sample: 10 pairs sum below -2: 2 of 4
    "sample_1": ["10", "10", "9", "11"],
    # every generation contains the input: all of them count as wrong: 0
    "sample_2": ["mostFrequent(s = 'abca')", "mostFrequent(s = 'abca')[0]"],
    "sample_3": ["'a'", "'c'"],  # 1/2
    # 6 and 6.0 are both == 6; "sum([1, 2, 3])" does not contain the input string: 3 of 3
    "sample_4": ["6", "6.0", "sum([1, 2, 3])"],
    "sample_5": ["14", "6", "1 / 0"],  # an answer that raises is wrong: 1/3
}
VERDICTS = {"sample_0": [True, False, None], "sample_1": [True, True, False, False], "sample_2": [None, None],
            "sample_3": [True, False], "sample_4": [True, True, True], "sample_5": [True, False, False]}
EXPECTED_PASS_AT_1 = 100 * (1 / 2 + 2 / 4 + 0 + 1 / 2 + 1 + 1 / 3) / 6  # the mean over samples, not questions


def test_scores_as_lcb_does(sb):
    scored = livecodebench.score_generations(GENERATIONS, ROWS, sb)
    assert scored["raw_scored_generations"] == VERDICTS
    assert scored["pass_at_1"] == pytest.approx(EXPECTED_PASS_AT_1)
    assert scored["pass_at_5"] is None  # fewer than five checked generations a sample


def _direct_response(row: dict, answer: str) -> str:
    """What a model answers to LCB's direct prompt, as LCB saves it in ``output_list``."""
    return answer if row["input"] in answer else f"assert {row['input']} == {answer}\nThat is the output."


def _cot_response(row: dict, answer: str) -> str:
    return (f"Let's execute the code step by step: {row['function_name']} == the call below.\n"
            f"[ANSWER]\nassert {row['input']} == {answer}\n[/ANSWER]")


def _saved_records(outputs, preds) -> list[dict]:
    """LCB's saved code-execution output (``CodeExecutionProblem.insert_output``), one record per sample,
    sorted as its runner sorts them."""
    return [{**row, "output_list": outputs(row), **({"pred_list": GENERATIONS[row["id"]]} if preds else {})}
            for row in livecodebench.sample_order(ROWS)]


@pytest.mark.parametrize("form", ["saved_with_pred_list", "output_list_direct", "output_list_cot", "eval_all",
                                  "by_id", "list_of_lists"])
def test_every_format_lcb_writes_is_read_by_sample_id(tmp_path, form):
    """Each of LCB's formats gives the same generations keyed by sample id (pred_list wins over
    output_list; output_list alone goes through LCB's extraction, with --cot for its CoT prompt)."""
    if form == "saved_with_pred_list":
        raw = _saved_records(lambda row: ["ignored: pred_list is scored as it is"], preds=True)
    elif form == "output_list_direct":
        raw = _saved_records(lambda row: [_direct_response(row, g) for g in GENERATIONS[row["id"]]], preds=False)
    elif form == "output_list_cot":
        raw = _saved_records(lambda row: [_cot_response(row, g) for g in GENERATIONS[row["id"]]], preds=False)
    elif form == "eval_all":  # insert_output_evaluation adds graded_list and pass@1
        raw = [{**record, "graded_list": [True], "pass@1": 1.0}
               for record in _saved_records(lambda row: [], preds=True)]
    elif form == "by_id":
        raw = GENERATIONS
    else:
        raw = [GENERATIONS[row["id"]] for row in livecodebench.sample_order(ROWS)]
    path = tmp_path / "generations.json"
    path.write_text(json.dumps(raw))
    assert livecodebench.read_generations(path, ROWS, cot=form == "output_list_cot") == GENERATIONS


def test_lcb_order_is_numeric_in_the_sample_id():
    rows = [lcb_row(n, "q", "f", "def f(): pass", "f()", "None") for n in (10, 2, 1)]
    assert [row["id"] for row in livecodebench.sample_order(rows)] == ["sample_1", "sample_2", "sample_10"]


@pytest.mark.parametrize("raw,message", [
    ({"2917": ["3"], "2845": ["'a'"], "2999": ["6"]}, "keyed by question_id '2917', which repeats in the rows"),
    ([{"question_id": "2917", "pred_list": ["3"]}], "which repeats in the rows (samples sample_0, sample_1)"),
    ([{"question_id": "2917", "code_list": ["3"]}], "code_list, LCB's code-generation output"),
    ([{"id": "sample_0"}], "neither pred_list nor output_list"),
    ([{"id": "sample_0", "pred_list": ["3"]}, {"id": "sample_0", "pred_list": ["4"]}], "sample sample_0 has generations twice"),
    ([["3"]], "one list per sample in LCB's order; it has 1, the rows 6"),
    ({"sample_0": "3"}, "generations must be a list of strings"),
    ("3", "expected {id: [generation, ...]}"),
])
def test_ambiguous_or_foreign_files_are_refused(tmp_path, raw, message):
    path = tmp_path / "generations.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=re.escape(message)):
        livecodebench.read_generations(path, ROWS)


def test_a_question_with_one_sample_may_be_keyed_by_question_id(tmp_path):
    rows = [ROWS[0], {**ROWS[2], "id": "sample_7"}]
    path = tmp_path / "generations.json"
    path.write_text(json.dumps({"sample_0": ["3"], "2845": ["'a'"]}))
    assert livecodebench.read_generations(path, rows) == {"sample_0": ["3"], "sample_7": ["'a'"]}


def test_rows_without_a_sample_id_or_with_a_repeated_one_are_refused(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({k: v for k, v in ROWS[0].items() if k != "id"}) + "\n")
    with pytest.raises(ValueError, match="row 1 lacks id"):
        livecodebench.read_rows(path)
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ValueError, match="rows 1 and 2 share the sample id 'sample_0'"):
        livecodebench.read_rows(path)


def test_a_sample_without_generations_counts_as_lcb_counts_it(sb):
    """LCB's ``pass_at_k(0, 0, 1)`` is 1.0 (``n - c < k``): reproduced, so the number equals LCB's."""
    scored = livecodebench.score_generations({"sample_0": [], "sample_1": ["9"]}, ROWS[:2], sb)
    assert scored["pass_at_1"] == pytest.approx(50.0)


def test_a_right_answer_to_a_program_that_needs_the_base_imports_passes(sb):
    """``List[int]`` without ``from typing import List``, ``np`` without ``import numpy``: a right
    answer passes because LCB's BASE_IMPORTS come first (without them every such answer failed)."""
    answers = {"sample_0": ["3"], "sample_1": ["10"], "sample_2": ["'a'"], "sample_3": ["'a'"], "sample_4": ["6"],
               "sample_5": ["14"]}
    scored = livecodebench.score_generations(answers, ROWS, sb)
    assert scored["pass_at_1"] == pytest.approx(100.0)


@pytest.mark.parametrize("text,cot,expected", [
    ("[ANSWER]\nassert countPairs(nums = [1]) == 3\n[/ANSWER]", True, "3"),
    ("Let me think.\n[ANSWER]\n3\n[/ANSWER]", True, "3"),
    ("assert countPairs(nums = [1]) == 3\nthe end", False, "3"),
    ("3", False, "3"),
    ("[ANSWER]5[/ANSWER]", False, "[ANSWER]5"),  # LCB's rule as it is: [ANSWER] is cut only with cot
    ("a == b == c", False, "b"),
    (None, False, ""),
])
def test_answers_are_read_with_lcbs_extraction(text, cot, expected):
    assert livecodebench.extract_answer(text, cot) == expected


def test_score_livecodebench_command(tmp_path):
    """The command on LCB's saved output (records sorted by sample, question_id repeating)."""
    rows, generations, out = tmp_path / "rows.jsonl", tmp_path / "gens.json", tmp_path / "scored.json"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    generations.write_text(json.dumps(_saved_records(lambda row: [], preds=True)))
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                           "--data", str(rows), "--out", str(out), "--backend", "local"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["pass_at_1"] == pytest.approx(EXPECTED_PASS_AT_1)
    assert json.loads(out.read_text())["raw_scored_generations"] == VERDICTS
    generations.write_text(json.dumps({"sample_0": ["3"]}))
    missing = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                              "--data", str(rows)], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "lacks 5 of the 6 samples" in missing.stderr
    generations.write_text(json.dumps({"2917": ["3"], "2845": ["'a'"], "2999": ["6"]}))
    by_question = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                                  "--data", str(rows)], capture_output=True, text=True, timeout=120)
    assert by_question.returncode == 2 and "which repeats in the rows" in by_question.stderr
    rows.write_text(json.dumps({"id": "sample_0", "question_id": "x", "code": "def f(): pass"}) + "\n")
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                          "--data", str(rows)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "lacks input, output" in bad.stderr


def test_saved_records_are_read_back_as_the_same_answers(tmp_path):
    """The evaluation asset writes LCB's saved format: it reads back (here and in LCB) as the answers."""
    responses = {row["id"]: [f"assert {row['input']} == 0"] for row in ROWS}
    path = tmp_path / "output_direct_lcb.json"
    path.write_text(json.dumps(livecodebench.saved_records(ROWS, responses, GENERATIONS)))
    records = json.loads(path.read_text())
    assert [record["id"] for record in records] == [f"sample_{n}" for n in range(6)]
    assert {"output_list", "pred_list", "question_id", "problem_id", "numsteps"} <= set(records[0])
    assert livecodebench.read_generations(path, ROWS) == GENERATIONS
