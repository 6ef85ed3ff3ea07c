"""Prompts and answer extraction for execution benchmarks, and the step-vs-final gap figure."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcode_core.evaluation import cruxeval
from stepcode_core.evaluation.execution import (
    STYLES,
    execution_prompt,
    extract_generation,
)
from stepcode_core.evaluation.trace_gap import trace_gap
from stepcode_core.rewards.verify import Verdict

def _official(folder, mode: str) -> dict[str, list[str]]:
    return json.loads((folder / "cruxeval" / "samples" / f"codellama-7b_temp0.2_{mode}_generations.json").read_text())


def _compiles(source: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in model text
            compile(source, "<generation>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


@pytest.mark.parametrize("mode", cruxeval.MODES)
def test_every_official_sample_generation_survives_a_round_trip_through_model_text(mode, cruxeval_rows, cruxeval_data):
    """Each generation of the official sample files, written back as a model would answer our prompt
    (an assertion in [ANSWER] tags, after a [THOUGHT] for CoT), is extracted unchanged: scoring our
    extractions gives the official verdicts. 29 input and 6 output generations span several lines.
    A generation that is not Python (cut off mid-string) fails the official check; its extraction
    must fail to compile there too."""
    problems = {row["id"]: row for row in cruxeval_rows}
    checked, broken = 0, 0
    for sample, generations in _official(cruxeval_data, mode).items():
        problem = problems[sample]
        for generation in generations:
            statement = (f"assert f({problem['input']}) == {generation}" if mode == "output"
                         else f"assert {generation} == {problem['output']}")
            direct = f"[ANSWER]\n{statement}\n[/ANSWER]\n[PYTHON]\nnext problem"
            cot = f"[THOUGHT]\nStep one: [ANSWER] is later.\n[/THOUGHT]\n[ANSWER]\n{statement}\n[/ANSWER]"
            checked += 1
            if not _compiles(generation):
                broken += 1
                check = (f"assert {problem['output']} == " if mode == "output" else "assert ") + "{}"
                assert not _compiles(check.format(extract_generation(direct, mode, "direct")))
                continue
            assert extract_generation(direct, mode, "direct") == generation
            assert extract_generation(cot, mode, "cot") == generation
    assert checked == 8000 and broken < 0.05 * checked  # 163 cut-off input generations


@pytest.mark.parametrize(("text", "mode", "style", "expected"), [
    ("<state>ys: [3, 1]</state>\n<answer>[1, 3]</answer>", "output", "anchored", "[1, 3]"),
    ("<answer>f([1, 3])</answer>", "input", "anchored", "f([1, 3])"),
    ("no tags: [ANSWER]\n'abc'\n[/ANSWER]", "output", "anchored", "'abc'"),  # anchored falls back to [ANSWER]
    ("[ANSWER]\n```python\nassert f(2) == 4\n```\n[/ANSWER]", "output", "direct", "4"),
    ("[ANSWER]\n5, 'a'\n[/ANSWER]", "input", "direct", "f(5, 'a')"),  # bare arguments become a call
    ("[ANSWER]\nassert f('a == b') == 'x==y'\n[/ANSWER]", "output", "direct", "'x==y'"),  # == inside strings
    ("[ANSWER]\nassert f(1) == 'unterminated\nassert f(2) == 3\n[/ANSWER]", "output", "direct", "'unterminated"),
    ("[ANSWER]\n[ANSWER]\nassert f(1) == 2", "output", "direct", "2"),  # the last [ANSWER] opens the answer
    ("", "output", "direct", ""),
])
def test_extraction_cases(text, mode, style, expected):
    assert extract_generation(text, mode, style) == expected


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["[ANSWER]", "[/ANSWER]", "<answer>", "</answer>", "<state>", "</state>", "assert ",
                                 " == ", "f(", ")", "[", "]", "'", '"', '"""', "\\", "\n", "```", "```python", ": "])
                | st.text(), max_size=30).map("".join),
       st.sampled_from(cruxeval.MODES), st.sampled_from(STYLES))
def test_extraction_never_raises(text, mode, style):
    generation = extract_generation(text, mode, style)
    assert isinstance(generation, str)
    if mode == "input":
        assert generation.startswith("f(")  # what CRUXEval's input-mode check calls


def test_extraction_of_non_text_is_empty():
    assert extract_generation(None, "output", "direct") == "" and extract_generation(3, "input", "cot") == ""


def test_prompts_carry_the_program_and_the_question():
    code = "def f(xs):\n    ys = xs + [1]\n    return ys"
    direct = execution_prompt(code, "output", "direct", "f([2])", "[2, 1]")
    assert code in direct and direct.rstrip().endswith("assert f([2]) == ??\n[/PYTHON]")
    assert "[THOUGHT]" not in direct and "[THOUGHT]" in execution_prompt(code, "output", "cot", "f([2])", "[2, 1]")
    assert "assert f(??) == [2, 1]" in execution_prompt(code, "input", "direct", "f([2])", "[2, 1]")
    anchored = execution_prompt(code, "output", "anchored", "f([2])", "[2, 1]")
    assert "print(" in anchored and "<state>" in anchored  # P' with its anchors, and the trace format
    with pytest.raises(ValueError, match="style"):
        execution_prompt(code, "output", "verbose", "f([2])", "[2, 1]")


def test_trace_gap_by_hand():
    verdicts = [
        Verdict([1.0, 1.0], 1.0),  # right answer, right logic
        Verdict([1.0, 0.0], 1.0),  # right answer, wrong logic
        Verdict([0.0, 0.0], 0.0),
        Verdict([], 1.0),  # no states: counts for the final answer only
    ]
    gap = trace_gap(verdicts)
    assert gap["samples"] == 4 and gap["steps"] == 6
    assert gap["step_accuracy"] == pytest.approx(100 * 3 / 6)
    assert gap["final_accuracy"] == pytest.approx(75.0)
    assert gap["gap"] == pytest.approx(25.0)
    assert gap["trace_accuracy"] == pytest.approx(50.0)  # the first and the stateless one
    assert gap["right_answer_wrong_logic"] == pytest.approx(25.0)
    assert trace_gap([])["samples"] == 0
