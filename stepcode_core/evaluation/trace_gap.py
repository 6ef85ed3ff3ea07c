"""The step-vs-final gap ("right answer, wrong logic") of a checkpoint's responses, from the
verifier's verdicts on the held-out trace split."""

from __future__ import annotations

from collections.abc import Sequence

from stepcode_core.rewards.verify import Verdict


def trace_gap(verdicts: Sequence[Verdict]) -> dict:
    """Step accuracy (every true state, micro-averaged), final accuracy and their gap in points,
    plus the share of "right answer, wrong logic" responses (final right, some state wrong), from
    the verifier's verdicts (:func:`stepcode_core.rewards.verify.verify`)."""
    step_marks = [mark for verdict in verdicts for mark in verdict.step_rewards]
    full_traces = [all(mark == 1.0 for mark in verdict.step_rewards) for verdict in verdicts]
    finals = [verdict.final_reward == 1.0 for verdict in verdicts]
    n = len(verdicts)
    step_accuracy = 100.0 * sum(step_marks) / len(step_marks) if step_marks else 0.0
    final_accuracy = 100.0 * sum(finals) / n if n else 0.0
    return {
        "samples": n,
        "steps": len(step_marks),
        "step_accuracy": step_accuracy,
        "trace_accuracy": 100.0 * sum(full_traces) / n if n else 0.0,
        "final_accuracy": final_accuracy,
        "gap": final_accuracy - step_accuracy,
        "right_answer_wrong_logic": 100.0 * sum(f and not t for f, t in zip(finals, full_traces)) / n if n else 0.0,
    }
