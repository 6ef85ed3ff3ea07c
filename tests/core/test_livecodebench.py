"""LiveCodeBench code execution scored as LiveCodeBench's own harness scores it. The expected
numbers are worked out by hand from LCB's rules (lcb_runner/evaluation/compute_code_execution_metrics.py),
not produced by the code under test."""

from __future__ import annotations

import json
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

# LCB's programs annotate with typing names and use collections without importing them.
ROWS = [
    {"question_id": "2917", "contest_id": "weekly-contest-361", "contest_date": "2023-09-03", "difficulty": "easy",
     "function_name": "countPairs",
     "code": "def countPairs(nums: List[int], target: int) -> int:\n    n = len(nums)\n    ans = 0\n"
             "    for i in range(n):\n        for j in range(i + 1, n):\n            if nums[i] + nums[j] < target:\n"
             "                ans += 1\n    return ans",
     "input": "countPairs(nums = [-1, 1, 2, 3, 1], target = 2)", "output": "3", "numsteps": 100},
    {"question_id": "2845", "contest_id": "weekly-contest-352", "contest_date": "2023-07-02", "difficulty": "medium",
     "function_name": "mostFrequent",
     "code": "def mostFrequent(s: str) -> str:\n    c = Counter(s)\n    return max(sorted(c), key=c.get)",
     "input": "mostFrequent(s = 'abca')", "output": "'a'", "numsteps": 50},
    {"question_id": "2999", "contest_id": "biweekly-contest-113", "contest_date": "2023-09-16", "difficulty": "easy",
     "function_name": "total",
     "code": "def total(nums: List[int]) -> int:\n    return int(np.sum(np.array(nums)))",
     "input": "total(nums = [1, 2, 3])", "output": "6", "numsteps": 10},
]
GENERATIONS = {
    # 3 right, 4 wrong, the third repeats the input: skipped, so n = 2, c = 1: pass@1 0.5
    "2917": ["3", "4", "countPairs(nums = [-1, 1, 2, 3, 1], target = 2)"],
    # every generation contains the input: all of them count as wrong: 0
    "2845": ["mostFrequent(s = 'abca')", "mostFrequent(s = 'abca')[0]"],
    # 6 and 6.0 are both == 6; "sum([1, 2, 3])" does not contain the input string: 3 of 3
    "2999": ["6", "6.0", "sum([1, 2, 3])"],
}
EXPECTED_PASS_AT_1 = 100 * (0.5 + 0.0 + 1.0) / 3


def test_scores_as_lcb_does(sb):
    scored = livecodebench.score_generations(GENERATIONS, ROWS, sb)
    assert scored["raw_scored_generations"] == {"2917": [True, False, None], "2845": [None, None],
                                                "2999": [True, True, True]}
    assert scored["pass_at_1"] == pytest.approx(EXPECTED_PASS_AT_1)
    assert scored["pass_at_5"] is None  # fewer than five checked generations a problem


def test_a_right_answer_to_a_program_that_needs_the_base_imports_passes(sb):
    """``List[int]`` without ``from typing import List``, ``np`` without ``import numpy``: a right
    answer passes because LCB's BASE_IMPORTS come first (without them every such answer failed)."""
    scored = livecodebench.score_generations({"2917": ["3"], "2845": ["'a'"], "2999": ["6"]}, ROWS, sb)
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
    rows, generations, out = tmp_path / "rows.jsonl", tmp_path / "gens.json", tmp_path / "scored.json"
    rows.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    generations.write_text(json.dumps([{"question_id": k, "code_list": v} for k, v in GENERATIONS.items()]))
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                           "--data", str(rows), "--out", str(out), "--backend", "local"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["pass_at_1"] == pytest.approx(EXPECTED_PASS_AT_1)
    assert json.loads(out.read_text())["raw_scored_generations"]["2845"] == [None, None]
    generations.write_text(json.dumps({"2917": ["3"]}))
    missing = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                              "--data", str(rows)], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "lacks 2 problems" in missing.stderr
    rows.write_text(json.dumps({"question_id": "x", "code": "def f(): pass"}) + "\n")
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "livecodebench", str(generations),
                          "--data", str(rows)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "lacks input, output" in bad.stderr
