"""95% intervals for every reported accuracy: Wilson for a proportion of independent yes/no verdicts,
the bootstrap over tasks for pooled step accuracy and for paired differences of two checkpoints on
the same tasks, Welch's t for the difference between two sets of independent runs (seeds). All come from SciPy (``binomtest(...).proportion_ci``, ``stats.bootstrap``, ``ttest_ind``); this
module only says which one each number gets.

Intervals are ``[low, high]`` on the number's own scale (0-1 here; callers scale to percent).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> list[float] | None:
    """Wilson score interval of ``successes`` / ``n`` (None when n is 0)."""
    if n <= 0:
        return None
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, confidence: float, seed: int, paired: bool) -> list[float]:
    result = stats.bootstrap(samples, statistic, paired=paired, vectorized=True, n_resamples=RESAMPLES,
                             confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return [float(low), float(high)]


def _ratio(correct, totals, axis=-1):
    totals_sum = np.sum(totals, axis=axis)
    return np.sum(correct, axis=axis) / np.where(totals_sum == 0, 1, totals_sum)


def pooled_ratio(correct: Sequence[float], totals: Sequence[int], confidence: float = CONFIDENCE,
                 seed: int = 0) -> list[float] | None:
    """Interval of sum(correct) / sum(totals) (pooled step accuracy: states right over states), by
    resampling tasks, since the states of one response are not independent. None without states."""
    correct_array, totals_array = np.asarray(correct, float), np.asarray(totals, float)
    if totals_array.sum() == 0:
        return None
    if len(totals_array) < 2:
        value = float(correct_array.sum() / totals_array.sum())
        return [value, value]
    return _bootstrap((correct_array, totals_array), _ratio, confidence, seed, paired=True)


def paired_difference(correct_a: Sequence[float], totals_a: Sequence[int], correct_b: Sequence[float],
                      totals_b: Sequence[int], confidence: float = CONFIDENCE, seed: int = 0) -> list[float] | None:
    """Interval of ratio(b) - ratio(a) for two checkpoints scored on the same tasks (index i is the
    same task in both), resampling tasks jointly. The totals may differ per checkpoint: an input
    prediction's states are those of the predicted input's trace."""
    arrays = tuple(np.asarray(values, float) for values in (correct_a, totals_a, correct_b, totals_b))
    if len({len(array) for array in arrays}) != 1:
        raise ValueError("paired_difference needs the same tasks, in the same order, for both checkpoints")
    if arrays[1].sum() == 0 or arrays[3].sum() == 0:
        return None

    def difference(ca, ta, cb, tb, axis=-1):
        return _ratio(cb, tb, axis) - _ratio(ca, ta, axis)

    if len(arrays[0]) < 2:
        value = float(difference(*arrays))
        return [value, value]
    return _bootstrap(arrays, difference, confidence, seed, paired=True)


def difference_of_means(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """Interval of mean(b) - mean(a) for independent runs (a mode's seeds against another's):
    Welch's t interval, which with a handful of runs is wider, and truer, than the bootstrap's
    percentile interval. None with fewer than two runs on a side; one point when neither side varies."""
    a_array, b_array = np.asarray(a, float), np.asarray(b, float)
    if a_array.size < 2 or b_array.size < 2:
        return None
    if a_array.std() == 0 and b_array.std() == 0:
        value = float(b_array.mean() - a_array.mean())
        return [value, value]
    ci = stats.ttest_ind(b_array, a_array, equal_var=False).confidence_interval(confidence)
    return [float(ci.low), float(ci.high)]


def proportion(values: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0) -> list[float] | None:
    """Interval of a mean of per-item scores: Wilson when every score is 0 or 1 (one sample each),
    else the bootstrap of the mean (pass@1 from several samples per problem)."""
    array = np.asarray(values, float)
    if array.size == 0:
        return None
    if np.isin(array, (0.0, 1.0)).all():
        return wilson(int(array.sum()), int(array.size), confidence)
    if array.size < 2 or np.all(array == array[0]):
        return [float(array.mean())] * 2
    return _bootstrap((array,), lambda sample, axis=-1: np.mean(sample, axis=axis), confidence, seed, paired=False)


def mean_of_proportions(groups: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                        seed: int = 0) -> list[float] | None:
    """Interval of the unweighted mean of several groups' accuracies (REval's mean of its four tasks),
    each group resampled on its own."""
    arrays = tuple(np.asarray(group, float) for group in groups if len(group))
    if not arrays:
        return None
    if all(np.all(array == array[0]) for array in arrays) or min(array.size for array in arrays) < 2:
        value = float(np.mean([array.mean() for array in arrays]))
        return [value, value]

    def mean_of_means(*samples, axis=-1):
        return np.mean([np.mean(sample, axis=axis) for sample in samples], axis=0)

    return _bootstrap(arrays, mean_of_means, confidence, seed, paired=False)


def percent(interval: list[float] | None) -> list[float] | None:
    return None if interval is None else [round(100.0 * interval[0], 1), round(100.0 * interval[1], 1)]


def format_interval(value: float | None, interval: list[float] | None) -> str:
    """``41.2 [35.0, 47.5]`` (already in the caller's scale), or ``-``."""
    if value is None:
        return "-"
    if interval is None:
        return f"{value:.1f}"
    return f"{value:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"
