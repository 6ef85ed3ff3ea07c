"""The step-vs-final gap ("right answer, wrong logic") of a checkpoint's responses, from the
verifier's verdicts on the held-out trace split."""

from __future__ import annotations

from collections.abc import Sequence

from stepcode_core.evaluation.intervals import percent, pooled_ratio, wilson
from stepcode_core.rewards.verify import Verdict, step_accuracy


def trace_gap(verdicts: Sequence[Verdict]) -> dict:
    """Step accuracy (:func:`stepcode_core.rewards.verify.step_accuracy`, in percent), final accuracy and their gap in points,
    plus the share of "right answer, wrong logic" responses (final right, some state wrong), from
    the verifier's verdicts (:func:`stepcode_core.rewards.verify.verify`). Step and final accuracy
    come with 95% intervals (``*_ci``, percent): the bootstrap over tasks and Wilson."""
    full_traces = [all(mark == 1.0 for mark in verdict.step_rewards) for verdict in verdicts]
    finals = [verdict.final_reward == 1.0 for verdict in verdicts]
    n = len(verdicts)
    steps = step_accuracy(verdicts)
    step_percent = None if steps is None else 100.0 * steps
    final_accuracy = 100.0 * sum(finals) / n if n else 0.0
    return {
        "samples": n,
        "steps": sum(len(verdict.step_rewards) for verdict in verdicts),
        "step_accuracy": step_percent,
        "step_accuracy_ci": percent(pooled_ratio([sum(v.step_rewards) for v in verdicts],
                                                 [len(v.step_rewards) for v in verdicts])),
        "trace_accuracy": 100.0 * sum(full_traces) / n if n else 0.0,
        "final_accuracy": final_accuracy,
        "final_accuracy_ci": percent(wilson(sum(finals), n)),
        "gap": None if step_percent is None else final_accuracy - step_percent,
        "right_answer_wrong_logic": 100.0 * sum(f and not t for f, t in zip(finals, full_traces)) / n if n else 0.0,
    }
