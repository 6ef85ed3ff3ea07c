"""CRUXEval scoring: the official semantics, the official numbers, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stepcode_core.evaluation.cruxeval import (
    Problem,
    cheats,
    load_problems,
    pass_at_k,
    score_generations,
)

# Published with CRUXEval's sample generations (CodeLlama-7B, temperature 0.2, 10 per problem).
OFFICIAL = {"output": (34.212500000000006, 40.286706349206355), "input": (35.94999999999998, 44.991071428571416)}


def test_pass_at_k_matches_the_estimator():
    assert pass_at_k([10], [0], 1) == 0.0 and pass_at_k([10], [10], 5) == 100.0
    assert pass_at_k([10], [3], 1) == pytest.approx(30.0)
    assert pass_at_k([10], [3], 5) == pytest.approx(100 * (1 - (7 * 6 * 5 * 4 * 3) / (10 * 9 * 8 * 7 * 6)))
    assert pass_at_k([10, 10], [0, 10], 1) == pytest.approx(50.0)  # averaged over problems
    # fewer samples than k: the estimator would say 1 for one wrong sample; that is no measurement
    assert pass_at_k([1], [0], 5) is None and pass_at_k([10, 3], [1, 1], 5) is None and pass_at_k([], [], 1) is None


def test_anti_cheat_rules():
    problem = Problem("sample_0", "def f(x):\n    return x\n", "1", "1")
    assert cheats("input", "1", problem) and not cheats("input", "f(1)", problem)
    assert cheats("output", "f(1)", problem) and not cheats("output", "1", problem)


def test_verdicts_follow_the_official_harness(local_sandbox):
    problem = Problem("sample_0", "def f(xs):\n    return sorted(xs)\n", "[3, 1]", "[1, 3]")
    generations = {"sample_0": [
        "f([3, 1])",            # right
        "f([1, 3])",            # also right: any input that gives the output
        "f([2])",               # wrong
        "f(*iter(int, 1))",     # never ends: timed out
        "__import__('os').remove('x') or f([1, 3])",  # the harness disables os.remove
        "[1, 3]",               # no call: the anti-cheat rule
        "f([3, 1])",            # a duplicate, checked once, scored again
    ]}
    scored = score_generations(generations, [problem], "input", local_sandbox)
    assert scored["raw_scored_generations"]["sample_0"] == [True, True, False, False, False, False, True]
    assert scored["pass_at_1"] == pytest.approx(300 / 7)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["output", "input"])
def test_official_sample_generations_reproduce_the_official_scores(local_sandbox, cruxeval_data, mode):
    problems = load_problems(cruxeval_data / "cruxeval" / "cruxeval.jsonl")
    path = cruxeval_data / "cruxeval" / "samples" / f"codellama-7b_temp0.2_{mode}_generations.json"
    scored = score_generations(json.loads(path.read_text()), problems, mode, local_sandbox)
    assert (scored["pass_at_1"], scored["pass_at_5"]) == pytest.approx(OFFICIAL[mode], abs=1e-9)
    assert scored["raw_scored_generations"]["sample_799"] == [False] * 10
    assert len(scored["raw_scored_generations"]) == 800


def test_cli_scores_a_generations_file(tmp_path):
    data = tmp_path / "crux.jsonl"
    rows = [{"id": "sample_0", "code": "def f(a):\n    return a * 2\n", "input": "2", "output": "4"},
            {"id": "sample_1", "code": "def f(s):\n    return s[::-1]\n", "input": "'ab'", "output": "'ba'"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    generations = tmp_path / "gens.json"
    generations.write_text(json.dumps({"sample_0": ["4", "5", "f(2)"], "sample_1": ["'ba'", "\"ba\"", "'ab'"]}))
    out = tmp_path / "scored.json"
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "cruxeval", "--mode", "output",
                           str(generations), "--data", str(data), "--out", str(out), "--backend", "local"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.strip().splitlines()[-1])
    # three generations a problem: pass@5 cannot be estimated (it is not 100, as the estimator would say)
    assert last["pass_at_1"] == pytest.approx(50.0) and last["pass_at_5"] is None
    scored = json.loads(out.read_text())
    assert scored["raw_scored_generations"] == {"sample_0": [True, False, False], "sample_1": [True, True, False]}
    assert set(scored) == {"raw_generations", "raw_scored_generations", "pass_at_1", "pass_at_5"}
    bad = subprocess.run([sys.executable, "-m", "pipelines.cli", "score", "cruxeval", "--mode", "output",
                          str(tmp_path / "none.json"), "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no such file" in bad.stderr
