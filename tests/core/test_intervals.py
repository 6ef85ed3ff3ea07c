"""The 95% intervals: Wilson for yes/no verdicts, the bootstrap over tasks for pooled step accuracy
and for paired differences; known values and the properties a reader relies on."""

from __future__ import annotations

import random

import pytest

from stepcode_core.evaluation import intervals


def test_wilson_matches_known_values():
    low, high = intervals.wilson(0, 10)
    assert low == pytest.approx(0.0, abs=1e-9) and high == pytest.approx(0.2775, abs=1e-3)
    low, high = intervals.wilson(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-3), pytest.approx(0.7634, abs=1e-3))
    assert intervals.wilson(0, 0) is None


def test_pooled_ratio_covers_the_estimate_and_narrows_with_more_tasks():
    rng = random.Random(0)
    small = [(rng.randint(0, 3), 3) for _ in range(20)]
    large = small * 10
    for rows in (small, large):
        correct, totals = zip(*rows)
        low, high = intervals.pooled_ratio(correct, totals)
        assert low <= sum(correct) / sum(totals) <= high
    width = [intervals.pooled_ratio(*zip(*rows)) for rows in (small, large)]
    assert width[1][1] - width[1][0] < width[0][1] - width[0][0]
    assert intervals.pooled_ratio([0, 0], [0, 0]) is None


def test_paired_difference_sees_a_real_gain_and_not_a_null_one():
    rng = random.Random(1)
    totals = [3] * 64
    before = [rng.randint(0, 1) for _ in totals]
    after = [min(3, b + 2) for b in before]
    low, high = intervals.paired_difference(before, totals, after, totals)
    assert low > 0  # every task improved
    same = intervals.paired_difference(before, totals, before, totals)
    assert same == [0.0, 0.0]
    with pytest.raises(ValueError, match="same tasks"):
        intervals.paired_difference([1], [1], [1, 0], [1, 1])


def test_proportion_and_mean_of_groups():
    assert intervals.proportion([1, 0, 1, 1]) == intervals.wilson(3, 4)
    low, high = intervals.proportion([0.2, 0.4, 1.0, 0.6])
    assert low <= 0.55 <= high
    low, high = intervals.mean_of_proportions([[1, 0, 1, 1], [0, 0, 1, 0]])
    assert low <= 0.5 <= high
    assert intervals.format_interval(41.25, [35.0, 47.5]) == "41.2 [35.0, 47.5]"
    assert intervals.format_interval(None, None) == "-"
