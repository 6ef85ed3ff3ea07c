"""Rewards verified by execution in the (real, local) sandbox: output and input prediction."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepcode_core.evaluation.trace_gap import trace_gap
from stepcode_core.rewards.verify import (
    TaskSpec,
    Verdict,
    predicted_call,
    step_accuracy,
    verify,
)

CODE = "def f(x):\n    y = x + 3\n    z = y * 2\n    return z\n"
TRUTH = (("y", "7"), ("z", "14"), ("return", "14"))
OUTPUT = TaskSpec("output", "f", "4", "14", TRUTH, CODE)
INPUT = TaskSpec("input", "f", "4", "14", TRUTH, CODE)


def test_output_prediction(local_sandbox):
    responses = [
        "<state>y: 7</state> then <state>z: 14</state><state>return: 14</state><answer>14</answer>",
        "<state>y: 7</state><state>z: 15</state><answer>15</answer>",  # right first step, wrong after
        "<state>z: 14</state><answer>f(4)</answer>",  # CRUXEval's anti-cheat rule: the call itself scores 0
        "<answer> 14 </answer>",  # no states: the answer alone is right
        "no tags at all",
        "<answer>__import__('os').system('echo hi')</answer>",  # runs in the sandbox only, and is wrong
    ]
    verdicts = verify([OUTPUT] * len(responses), responses, local_sandbox)
    assert [v.step_rewards for v in verdicts] == [[1, 1, 1], [1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert [v.final_reward for v in verdicts] == [1, 0, 0, 1, 0, 0]
    assert verdicts[0].reward == 1.0 and verdicts[1].reward == 0.25
    # the states pooled over responses: 4 right of 18, not the mean of per-response means (or of final rewards)
    assert step_accuracy(verdicts) == pytest.approx(4 / 18)


def test_step_accuracy_is_one_definition():
    """States pooled over all responses; a response without states adds nothing; None without any
    state. The trace gap and the held-out scores report this number (the gap in percent)."""
    verdicts = [Verdict([1.0, 1.0, 1.0, 0.0], 1.0), Verdict([0.0], 0.0), Verdict([], 1.0)]
    assert step_accuracy(verdicts) == pytest.approx(3 / 5)  # per-response means would give (0.75 + 0) / 2
    assert step_accuracy([Verdict([], 1.0)]) is None and step_accuracy([]) is None
    assert trace_gap(verdicts)["step_accuracy"] == pytest.approx(100 * 3 / 5)
    assert trace_gap([Verdict([], 1.0)])["step_accuracy"] is None and trace_gap([Verdict([], 1.0)])["gap"] is None


def test_input_prediction_scores_states_against_the_predicted_inputs_trace(local_sandbox):
    responses = [
        "<state>y: 7</state><state>z: 14</state><state>return: 14</state><answer>f(4)</answer>",
        # f(5) returns 16, not 14: the final answer is wrong, but its states are f(5)'s and score
        "<state>y: 8</state><state>z: 16</state><answer>f(5)</answer>",
        "<state>y: 7</state><answer>f(x=4)</answer>",
        "<answer>14</answer>",  # not a call of f: never run
        "<answer>f(1/0)</answer>",  # raises before any state
        "<answer>g(4)</answer>",
        "<answer>f(4); import os</answer>",
    ]
    verdicts = verify([INPUT] * len(responses), responses, local_sandbox)
    assert [v.final_reward for v in verdicts] == [1, 0, 1, 0, 0, 0, 0]
    assert verdicts[0].step_rewards == [1, 1, 1]
    assert verdicts[1].predicted_steps == [("y", "8"), ("z", "16"), ("return", "16")]
    assert verdicts[1].step_rewards == [1, 1, 0]
    assert verdicts[2].step_rewards == [1, 0, 0]
    assert verdicts[3].step_rewards == [] and "not a call" in verdicts[3].note
    assert verdicts[4].step_rewards == [] and "ZeroDivisionError" in verdicts[4].note


def test_mixed_batch_keeps_order(local_sandbox):
    specs = [OUTPUT, INPUT, OUTPUT, INPUT]
    responses = ["<answer>14</answer>", "<answer>f(4)</answer>", "<answer>13</answer>", "<answer>f(3)</answer>"]
    assert [v.final_reward for v in verify(specs, responses, local_sandbox)] == [1, 1, 0, 0]


def test_predicted_call():
    assert predicted_call(" f([1, 2], k=3) ", "f") == "f([1, 2], k=3)"
    assert predicted_call("f(1)(2)", "f") is None and predicted_call("f(1", "f") is None
    assert predicted_call("solve(1)", "solve") == "solve(1)" and predicted_call(None, "f") is None


def test_input_prediction_traces_under_the_rows_policy(local_sandbox):
    """The dense policy anchors inside loops: the predicted input's trace, and so the states a
    response is scored against, follow the task's policy."""
    loop = "def f(n):\n    t = 0\n    for i in range(n):\n        t = t + i\n    return t\n"
    spec = {"task": "input", "entry_point": "f", "input": "3", "output": "3", "code": loop, "steps": []}
    paper, dense = (verify([TaskSpec.from_row({**spec, "policy": p})], ["<answer>f(3)</answer>"], local_sandbox)[0]
                    for p in ("paper", "dense"))
    assert paper.final_reward == dense.final_reward == 1.0
    assert [name for name, _ in paper.predicted_steps] == ["t", "t", "return"]  # t = 0, after the loop, return
    names = [name for name, _ in dense.predicted_steps]
    assert names[0] == "t" and names.count("i") == 3 and names[-1] == "return"  # and i, t in every pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4),
       st.lists(st.sampled_from(["<answer>", "</answer>", "<state>", "</state>", "f(", ")", "y: ", "'"]), max_size=8))
def test_verify_never_raises_on_arbitrary_text(local_sandbox, texts, tags):
    responses = [text + "".join(tags) + text[::-1] for text in texts]
    specs = [OUTPUT if i % 2 else INPUT for i in range(len(responses))]
    for verdict in verify(specs, responses, local_sandbox):
        assert verdict.final_reward in (0.0, 1.0) and all(r in (0.0, 1.0) for r in verdict.step_rewards)
