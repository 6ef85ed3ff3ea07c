"""The real-model ablation's numbers from per-task samples: each mode's change from the warm start
and each pair of modes, pooled over seeds, with paired intervals over the same tasks."""

from __future__ import annotations

import pytest

from stepcode_core.training.ablation import compare_on_tasks, describe_changes


def _sample(task: str, marks: str, answer_right: bool) -> dict:
    """A trace-gap samples.jsonl record: one letter per state (r right, w wrong, m missing)."""
    names = {"r": "right", "w": "wrong", "m": "missing"}
    return {"task_id": task, "steps": [{"mark": names[m]} for m in marks], "answer_right": answer_right}


START = [_sample("t0", "rw", False), _sample("t1", "ww", False), _sample("t2", "rrr", True), _sample("t3", "w", False)]


def _run(mode: str, seed: int, marks: list[str], answers: list[bool]) -> dict:
    return {"mode": mode, "seed": seed,
            "samples": [_sample(f"t{i}", m, a) for i, (m, a) in enumerate(zip(marks, answers))]}


def test_changes_pool_the_seeds_per_task_and_pair_the_modes():
    runs = [
        _run("terminal", 0, ["rw", "ww", "rrr", "w"], [False, False, True, False]),  # the warm start again
        _run("terminal", 1, ["rw", "ww", "rrr", "w"], [False, False, True, False]),
        _run("bilevel", 0, ["rr", "rw", "rrr", "r"], [True, False, True, True]),
        _run("bilevel", 1, ["rr", "ww", "rrr", "w"], [True, False, True, False]),
    ]
    summary = compare_on_tasks(START, runs)
    assert summary["tasks"] == 4 and set(summary["modes"]) == {"terminal", "bilevel"}
    assert summary["start"]["step_accuracy"] == pytest.approx(4 / 8)
    terminal, bilevel = summary["modes"]["terminal"], summary["modes"]["bilevel"]
    assert terminal["vs_start"]["step_accuracy_change"] == 0.0
    assert terminal["vs_start"]["step_accuracy_change_ci"] == [0.0, 0.0]
    # Bilevel over both seeds: 7/8 and 5/8 right states, so 12/16 pooled, against the start's 3/8.
    assert bilevel["step_accuracy"]["values"] == [0.875, 0.625]
    assert bilevel["vs_start"]["step_accuracy_change"] == pytest.approx(12 / 16 - 4 / 8)
    assert bilevel["vs_start"]["final_accuracy_change"] == pytest.approx(5 / 8 - 1 / 4)
    low, high = bilevel["vs_start"]["step_accuracy_change_ci"]
    assert low <= 12 / 16 - 4 / 8 <= high and high <= 1.0
    (pair,) = summary["pairs"]
    assert (pair["from"], pair["to"]) == ("terminal", "bilevel")
    assert pair["step_accuracy_change"] == pytest.approx(bilevel["vs_start"]["step_accuracy_change"])
    assert summary["best_step_accuracy"] == "bilevel"
    lines = describe_changes(summary)
    assert lines[0].startswith("terminal - warm start: step accuracy +0.0 [0.0, 0.0]")
    assert lines[-1].startswith("bilevel - terminal: step accuracy +25.0 [")


def test_a_run_scored_on_other_tasks_is_refused():
    other = _run("step", 0, ["rr", "rr", "rr"], [True, True, True])  # t3 missing
    with pytest.raises(ValueError, match="same tasks"):
        compare_on_tasks(START, [other])


def test_the_miniatures_ranking_comes_with_welch_intervals_over_seeds():
    """summarize (the miniature's aggregate numbers): each pair of modes differs by its means over the
    seeds, with Welch's interval: it holds the difference, widens with the seeds' spread, and
    excludes 0 only where the seeds agree."""
    from scipy import stats

    from stepcode_core.training.ablation import describe, summarize

    terminal, step, bilevel = [0.40, 0.65, 0.55, 0.70, 0.42], [0.76, 0.75, 0.77, 0.78, 0.74], [0.79, 0.78, 0.80, 0.77, 0.79]
    runs = [{"mode": mode, "seed": seed, "step_accuracy": value, "final_accuracy": 0.7}
            for mode, values in (("terminal", terminal), ("step", step), ("bilevel", bilevel))
            for seed, value in enumerate(values)]
    summary = summarize(runs, {"step_accuracy": 0.6, "final_accuracy": 0.5})
    pairs = {(pair["from"], pair["to"]): pair for pair in summary["pairs_over_seeds"]}
    assert set(pairs) == {("terminal", "step"), ("terminal", "bilevel"), ("step", "bilevel")}
    close = pairs[("step", "bilevel")]
    assert close["step_accuracy_change"] == pytest.approx(0.786 - 0.76)
    low, high = close["step_accuracy_change_ci"]
    expected = stats.ttest_ind(bilevel, step, equal_var=False).confidence_interval(0.95)
    assert (low, high) == (pytest.approx(expected.low, abs=1e-4), pytest.approx(expected.high, abs=1e-4))
    assert 0 < low < close["step_accuracy_change"] < high  # five agreeing seeds: the lead is firm
    wide = pairs[("terminal", "bilevel")]["step_accuracy_change_ci"]
    assert wide[1] - wide[0] > 4 * (high - low)  # terminal's seeds scatter: its interval is wide
    assert pairs[("terminal", "step")]["final_accuracy_change_ci"] == [0.0, 0.0]  # no spread, no width
    assert any(line.startswith("bilevel - step over seeds: step accuracy +2.6 [") for line in describe(summary))
    assert not any(line.startswith("left out") for line in describe(summary))
    summary["left_out_other_settings"] = 2
    assert describe(summary)[-1] == "left out: 2 run(s) trained with other settings than the rest"
    one_seed = summarize([run for run in runs if run["seed"] == 0])
    assert all(pair["step_accuracy_change_ci"] is None for pair in one_seed["pairs_over_seeds"])


def test_a_report_pools_only_runs_trained_alike():
    """A variant tried on one run (``stepcode ablation --set ... --runs ...``) is left out of the
    report of the others, whatever its mode and seed."""
    from stepcode_core.training.ablation import with_common_settings

    usual = {"name": "cpu-demo", "grpo_lambda": 0.3, "grpo_steps": 12}
    runs = [{"mode": mode, "seed": seed, "settings": {**usual, "grpo_mode": mode, "seed": seed}}
            for mode in ("terminal", "bilevel") for seed in (0, 1)]
    variant = {"mode": "bilevel", "seed": 0, "settings": {**usual, "grpo_lambda": 0.7, "grpo_mode": "bilevel", "seed": 0}}
    kept, left_out = with_common_settings(runs[:3] + [variant])
    assert kept == runs[:3] and left_out == 1
    assert with_common_settings(runs) == (runs, 0) and with_common_settings([]) == ([], 0)
    # one run each way: the latest is the one just tried, whatever the order of the partitions
    other = {**variant, "mode": "terminal", "settings": {**variant["settings"], "grpo_lambda": 1.0}}
    assert with_common_settings([{**variant, "at": 2.0}, {**other, "at": 1.0}]) == ([{**variant, "at": 2.0}], 1)
    assert with_common_settings([{**variant, "at": 1.0}, {**other, "at": 2.0}]) == ([{**other, "at": 2.0}], 1)
