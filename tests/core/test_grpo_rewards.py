"""Bi-Level GRPO formulas pinned on hand-computed examples; the response parser and step rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcode_core.grpo import group_advantages, intra_advantages, step_advantages, token_advantages
from stepcode_core.responses import parse_response, step_of_offsets
from stepcode_core.rewards import state_matches, step_rewards, values_equal

R = np.array([[1, 1, 1], [1, 0, 0], [0, 0, 1]], dtype=float)  # 3 samples, 2 states + the final answer
S = 1 / math.sqrt(3)  # sample std of any column with values {1, 1, 0} or {1, 0, 0}


def test_group_advantages_by_hand():
    expected = np.array([[S, 2 * S, S], [S, -S, -2 * S], [-2 * S, -S, S]])
    np.testing.assert_allclose(group_advantages(R, eps=0.0), expected, rtol=1e-9)


def test_intra_advantages_by_hand():
    # row 0: 1*(1+mean(1,1)), 1*(1+mean(1)), final 1; row 1: 1*(1+mean(0,0)), 0, 0; row 2: 0, 0, 1
    np.testing.assert_allclose(intra_advantages(R), [[2, 2, 1], [1, 0, 0], [0, 0, 1]])


def test_modes_are_one_setting_apart():
    bilevel = step_advantages(R, "bilevel", lam=0.3, eps=0.0)
    np.testing.assert_allclose(bilevel, group_advantages(R, 0.0) + 0.3 * intra_advantages(R))
    np.testing.assert_allclose(step_advantages(R, "step", eps=0.0), group_advantages(R, 0.0))
    np.testing.assert_allclose(step_advantages(R, "bilevel", lam=0.0, eps=0.0), step_advantages(R, "step", eps=0.0))
    terminal = step_advantages(R, "terminal", eps=0.0)
    np.testing.assert_allclose(terminal, [[S] * 3, [-2 * S] * 3, [S] * 3])
    with pytest.raises(ValueError, match="unknown mode"):
        step_advantages(R, "ppo")


def test_equal_rewards_leave_only_the_intra_term():
    ones = np.ones((4, 3))
    np.testing.assert_allclose(group_advantages(ones), np.zeros((4, 3)))
    np.testing.assert_allclose(step_advantages(ones, "bilevel", lam=0.3), 0.3 * np.array([[2, 2, 1]] * 4))
    np.testing.assert_allclose(step_advantages(np.zeros((4, 3)), "bilevel"), np.zeros((4, 3)))


def test_one_state_step_and_a_group_of_one():
    rewards = np.array([[1.0, 0.0], [0.0, 1.0]])  # n = 1: one state, then the final answer
    np.testing.assert_allclose(intra_advantages(rewards), [[1.0, 0.0], [0.0, 1.0]])
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(group_advantages(rewards, eps=0.0), [[s, -s], [-s, s]])
    np.testing.assert_allclose(group_advantages(np.array([[1.0, 1.0]])), [[0.0, 0.0]])


def test_missing_and_extra_steps():
    truth = [("a", "1"), ("b", "[1, 2]"), ("return", "'x'")]
    assert step_rewards([("a", "1")], truth) == [1.0, 0.0, 0.0]  # missing states score 0
    assert step_rewards([("a", "1"), ("b", "[1,2]"), ("return", '"x"'), ("c", "9")], truth) == [1.0, 1.0, 1.0]
    assert step_rewards([("b", "[1, 2]"), ("a", "1")], truth) == [0.0, 0.0, 0.0]  # by position
    assert step_rewards([], []) == []


def test_values_compare_as_literals_else_as_text():
    assert values_equal("[1,2]", "[1, 2]") and values_equal("'a'", '"a"')
    assert not values_equal("1", "'1'") and not values_equal("1", "1.0") and not values_equal("True", "1")
    assert values_equal("<map   object>", "<map object>")
    assert not state_matches(("x", "1"), ("y", "1"))


def test_parse_response_and_token_steps():
    text = "First x is set. <state>x: 1</state> then y <state>y: [1, 2]</state> extra <state>z: 3</state> so <answer>5</answer>"
    parsed = parse_response(text)
    assert parsed.pairs == [("x", "1"), ("y", "[1, 2]"), ("z", "3")]
    assert parsed.answer == "5"
    first_end, second_end = parsed.states[0].end, parsed.states[1].end
    offsets = [0, first_end - 1, first_end, second_end - 1, second_end, len(text) - 1]
    # The trace has two states: the third predicted state falls in the final step's segment.
    assert step_of_offsets(parsed, offsets, steps=2) == [0, 0, 1, 1, 2, 2]
    advantages = np.array([0.5, -0.25, 1.0])
    np.testing.assert_allclose(token_advantages(advantages, [0, 0, 1, 2]), [0.5, 0.5, -0.25, 1.0])
    with pytest.raises(ValueError):
        token_advantages(advantages, [3])


def test_parse_response_without_tags():
    parsed = parse_response("no tags here")
    assert parsed.states == [] and parsed.answer is None
    assert parse_response(None).answer is None
    assert parse_response("<state>not a pair</state><answer> 1 </answer>").pairs == [(None, "not a pair")]


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.tuples(st.text(max_size=8), st.text(max_size=20)), max_size=4))
def test_parser_and_rewards_never_raise(text, truth):
    parsed = parse_response(text)
    rewards = step_rewards(parsed.pairs, truth)
    assert len(rewards) == len(truth) and all(r in (0.0, 1.0) for r in rewards)
    steps = step_of_offsets(parsed, list(range(0, len(text), 3)), len(truth))
    assert all(0 <= s <= len(truth) for s in steps)
    values_equal(text, text[::-1])
