"""Step rewards: r_i = 1 when the predicted state s_i equals the true state s*_i.

States compare by name, then by value: as Python literals where both sides parse (so ``[1,2]``
equals ``[1, 2]`` and ``'a'`` equals ``"a"``), else as text with whitespace normalized. None of
these functions raises on arbitrary text. The final reward needs execution and lives with the
sandboxed verifier.
"""

from __future__ import annotations

import ast
import re

_SPACE = re.compile(r"\s+")
_NOT_PARSED = object()


def _literal(text: str) -> object:
    if len(text) > 100_000:  # literal_eval of huge text is slow; such a value compares as text
        return _NOT_PARSED
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_PARSED


def values_equal(predicted: str, true: str) -> bool:
    if not isinstance(predicted, str) or not isinstance(true, str):
        return False
    left, right = _literal(predicted), _literal(true)
    if left is not _NOT_PARSED and right is not _NOT_PARSED:
        try:
            return type(left) is type(right) and bool(left == right)
        except Exception:  # a comparison of odd literals (nan-like, deep nesting) that fails
            return False
    return _SPACE.sub(" ", predicted).strip() == _SPACE.sub(" ", true).strip()


def state_matches(predicted: tuple[str | None, str], true: tuple[str, str]) -> bool:
    (predicted_name, predicted_value), (true_name, true_value) = predicted, true
    return predicted_name == true_name and values_equal(predicted_value, true_value)


def step_rewards(predicted: list[tuple[str | None, str]], truth: list[tuple[str, str]]) -> list[float]:
    """One reward per true state, by position: a missing prediction scores 0; predictions beyond
    the trace's length earn nothing (and are not punished here)."""
    return [
        1.0 if index < len(predicted) and state_matches(predicted[index], true) else 0.0
        for index, true in enumerate(truth)
    ]
