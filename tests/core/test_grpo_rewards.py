"""Bi-Level GRPO formulas pinned on hand-computed examples; the response parser and step rewards."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepcode_core.rewards.responses import parse_response, step_of_offsets
from stepcode_core.rewards.steps import state_matches, step_rewards, values_equal
from stepcode_core.training.advantages import (
    group_advantages,
    group_matrix,
    intra_advantages,
    sample_token_steps,
    step_advantages,
    token_advantages,
    token_segments,
)

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


def test_n_equals_one_in_every_mode():
    # one state, then the final answer; rows: both right, state only, final only, neither
    rewards = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    s = math.sqrt(1 / 3)  # both columns {1, 1, 0, 0}: mean 1/2, sample std sqrt(1/3)
    group = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]]) / s
    np.testing.assert_allclose(step_advantages(rewards, "step", eps=0.0), group)
    # intra: state 1*(1 + r_final), final r_final
    intra = np.array([[2.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(step_advantages(rewards, "bilevel", lam=0.3, eps=0.0), group + 0.3 * intra)
    np.testing.assert_allclose(step_advantages(rewards, "terminal", eps=0.0), group[:, [1, 1]])


def test_all_equal_rewards_give_no_group_signal_in_any_mode():
    for value in (0.0, 1.0):
        rewards = np.full((5, 4), value)
        for mode in ("terminal", "step"):
            np.testing.assert_allclose(step_advantages(rewards, mode), np.zeros((5, 4)))
        np.testing.assert_allclose(step_advantages(rewards, "bilevel", lam=0.3), 0.3 * intra_advantages(rewards))


def test_ragged_group_pads_missing_steps_with_nan():
    # input prediction: sample 0's predicted input traced to 2 states, sample 1's to 1, sample 2's to none
    matrix = group_matrix([[1.0, 1.0], [0.0], []], [1.0, 0.0, 0.0])
    expected = np.array([[1.0, 1.0, 1.0], [0.0, np.nan, 0.0], [np.nan, np.nan, 0.0]])
    np.testing.assert_array_equal(np.isnan(matrix), np.isnan(expected))
    np.testing.assert_allclose(np.nan_to_num(matrix), np.nan_to_num(expected))
    group = group_advantages(matrix, eps=0.0)
    s2 = 1 / math.sqrt(2)  # column 0: {1, 0}, mean 1/2, std sqrt(1/2)
    s3 = 1 / math.sqrt(3)  # final column: {1, 0, 0}
    np.testing.assert_allclose(group[:, 0][:2], [0.5 / s2, -0.5 / s2])
    assert np.isnan(group[2, 0]) and np.isnan(group[1, 1])
    assert group[0, 1] == 0.0  # a step only one sample has: no spread, no group signal
    np.testing.assert_allclose(group[:, 2], [2 * s3, -s3, -s3])
    intra = intra_advantages(matrix)
    # sample 0: 1*(1 + mean(1, 1)), 1*(1 + 1), 1; sample 1: 0*(...) = 0, nan, 0 (later mean skips the missing step)
    np.testing.assert_allclose(intra[0], [2.0, 2.0, 1.0])
    assert intra[1, 0] == 0.0 and np.isnan(intra[1, 1]) and intra[1, 2] == 0.0
    # NaN-free matrices are unchanged by the NaN handling
    np.testing.assert_allclose(group_advantages(R, eps=0.0), np.array([[S, 2 * S, S], [S, -S, -2 * S], [-2 * S, -S, S]]))


def test_token_columns_of_a_shorter_sample():
    # sample with 1 state in a group matrix of 3 state columns: its final segment maps to column 3
    assert sample_token_steps([0, 0, 1, 1], sample_steps=1, matrix_steps=3) == [0, 0, 3, 3]
    assert sample_token_steps([0, 1, 2], sample_steps=2, matrix_steps=2) == [0, 1, 2]


def test_token_segments_follow_the_decoded_text():
    pieces = ["Reason ", "<state>", "x: 1", "</st", "ate>", " then", "<state>y: 2</state>", "<answer>3</answer>"]
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    text = decode(range(len(pieces)))
    parsed = parse_response(text)
    bounds = [state.end for state in parsed.states]
    # token 4 ("ate>") ends state 0: it is still segment 0; the state-1 token ends segment 1
    assert token_segments(list(range(len(pieces))), decode, bounds) == [0, 0, 0, 0, 0, 1, 1, 2]
    # the same as step_of_offsets at each token's start
    starts = [len(decode(range(t))) for t in range(len(pieces))]
    assert token_segments(list(range(len(pieces))), decode, bounds) == step_of_offsets(parsed, starts, steps=2)
    # extra states: a trace of one state puts everything after its first state in the final segment
    assert token_segments(list(range(len(pieces))), decode, bounds[:1]) == [0, 0, 0, 0, 0, 1, 1, 1]
    # missing states (no tags at all): every token is the final answer's
    assert token_segments([0, 5], decode, []) == [0, 0]
    assert token_segments([], decode, bounds) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=12), st.integers(0, 4))
def test_token_segments_never_raise_and_match_offsets(pieces, steps):
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    text = decode(range(len(pieces)))
    parsed = parse_response(text)
    bounds = [state.end for state in parsed.states[:steps]]
    segments = token_segments(list(range(len(pieces))), decode, bounds)
    starts = [len(decode(range(t))) for t in range(len(pieces))]
    mapped = sample_token_steps(segments, len(bounds), steps)
    assert mapped == step_of_offsets(parsed, starts, steps)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0.0, 1.0]), max_size=4), min_size=1, max_size=6), st.data())
def test_advantages_are_finite_where_steps_exist(state_rows, data):
    finals = data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=len(state_rows), max_size=len(state_rows)))
    matrix = group_matrix(state_rows, finals)
    for mode in ("terminal", "step", "bilevel"):
        advantages = step_advantages(matrix, mode)
        present = ~np.isnan(matrix)
        assert np.isfinite(advantages[present]).all()
