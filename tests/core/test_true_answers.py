"""True answers fed through prompt -> extraction -> scoring give 100%: a model that knows every answer
(a stand-in for the model only; prompts, extraction and the sandboxed scorers are the real ones),
written the way each prompt style asks for it."""

from __future__ import annotations

import pytest

from stepcode_core.evaluation import cruxeval, execution
from stepcode_core.models import SamplingConfig

SAMPLING = SamplingConfig(max_new_tokens=8, num_samples=2)


class Oracle:
    """``generate`` with the engines' signature, answering each prompt with ``answers[prompt]``."""

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def generate(self, prompts, sampling, progress=None):
        return [[self.answers[prompt]] * sampling.num_samples for prompt in prompts]


def _respond(style: str, question: str, answer: str, value: str) -> str:
    """What the prompt of ``style`` asks for: an assertion in [ANSWER] tags (after a thought for
    cot), or states and <answer> for anchored."""
    if style == "anchored":
        return f"Tracing it.\n<state>x: 1</state>\n<answer>{value}</answer>"
    thought = "[THOUGHT]\nI run it line by line.\n[/THOUGHT]\n" if style == "cot" else ""
    return f"{thought}[ANSWER]\n{question.replace('??', answer)}\n[/ANSWER]"


@pytest.mark.parametrize("style", execution.STYLES)
@pytest.mark.parametrize("mode", cruxeval.MODES)
def test_cruxeval_true_answers_score_100(local_sandbox, cruxeval_data, mode, style):
    problems = cruxeval.load_problems(cruxeval_data / "cruxeval" / "cruxeval.jsonl")[:40]
    items = execution.cruxeval_items(problems)
    answers = {}
    for item, problem in zip(items, problems):
        prompt = execution.execution_prompt(item.code, mode, style, item.call, item.output)
        if mode == "output":
            answers[prompt] = _respond(style, f"assert {item.call} == ??", problem.output, problem.output)
        else:
            answers[prompt] = _respond(style, f"assert f(??) == {problem.output}", problem.input, item.call)
    scored = execution.evaluate_execution(Oracle(answers), items, mode, style, SAMPLING, local_sandbox)
    assert scored["pass_at_1"] == pytest.approx(100.0)
    assert scored["pass_at_5"] is None  # two samples a problem


LCB_ROWS = [  # LiveCodeBench's execution schema; the programs lean on LCB's BASE_IMPORTS (List, Counter)
    {"id": "sample_0", "question_id": "a1", "function_name": "countPairs", "contest_id": "c", "contest_date": "2023-09-03",
     "difficulty": "easy", "numsteps": 9,
     "code": "def countPairs(nums: List[int], target: int) -> int:\n    return sum(1 for i in range(len(nums))"
             " for j in range(i + 1, len(nums)) if nums[i] + nums[j] < target)",
     "input": "countPairs(nums = [-1, 1, 2, 3, 1], target = 2)", "output": "3"},
    {"id": "sample_1", "question_id": "a2", "function_name": "top", "contest_id": "c", "contest_date": "2023-09-03",
     "difficulty": "easy", "numsteps": 9,
     "code": "def top(s: str) -> List[str]:\n    return [k for k, _ in Counter(s).most_common(2)]",
     "input": "top(s = 'aabbbc')", "output": "['b', 'a']"},
]


@pytest.mark.parametrize("style", execution.STYLES)
def test_livecodebench_true_answers_score_100(local_sandbox, style):
    items = execution.livecodebench_items(LCB_ROWS)
    answers = {execution.execution_prompt(item.code, "output", style, item.call, item.output, item.function_name):
               _respond(style, f"assert {item.call} == ??", item.output, item.output) for item in items}
    scored = execution.evaluate_livecodebench(Oracle(answers), LCB_ROWS, style, SAMPLING, local_sandbox)
    assert scored["pass_at_1"] == pytest.approx(100.0)
