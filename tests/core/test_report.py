"""The report's content: each checkpoint's numbers as fractions with intervals, the paired change
between two checkpoints on the same tasks, and the verdict a reader sees."""

from __future__ import annotations

import pytest

from stepcode_core.evaluation import report
from stepcode_core.evaluation.intervals import percent, pooled_ratio, wilson


def _sample(task_id: str, marks: list[str], answer_right: bool) -> dict:
    return {"task_id": task_id, "steps": [{"mark": m, "true": "y: 1", "predicted": "y: 1"} for m in marks],
            "answer_right": answer_right}


def _gap(samples: list[dict]) -> dict:
    right = [sum(s["mark"] == "right" for s in x["steps"]) for x in samples]
    scored = [sum(s["mark"] != "extra" for s in x["steps"]) for x in samples]
    finals = sum(x["answer_right"] for x in samples)
    return {"samples": len(samples), "step_accuracy": 100 * sum(right) / sum(scored),
            "step_accuracy_ci": percent(pooled_ratio(right, scored)), "final_accuracy": 100 * finals / len(samples),
            "final_accuracy_ci": percent(wilson(finals, len(samples))), "right_answer_wrong_logic": 0.0,
            "by_level": {"1": {"samples": len(samples), "step_accuracy": 10.0, "step_accuracy_ci": [5.0, 20.0],
                               "final_accuracy": 20.0, "final_accuracy_ci": [10.0, 30.0]}}}


BASE = [_sample(f"t{i}", ["missing", "missing"], False) for i in range(64)]
SFT = [_sample(f"t{i}", ["right", "right" if i % 2 else "wrong"], i % 3 == 0) for i in range(64)]


def test_entry_has_the_documented_fields_as_fractions():
    summaries = {"eval_trace_gap": _gap(SFT), "eval_cruxeval": {
        "problems": 32, "headline": 25.0, "results": [
            {"style": "direct", "mode": "output", "pass@1": 25.0, "pass@1_ci": [13.0, 42.0]},
            {"style": "direct", "mode": "input", "pass@1": 25.0, "pass@1_ci": [13.0, 42.0]}]},
        "eval_reval": {"programs": 2, "results": [{"style": "direct", "coverage": 50.0, "coverage_ci": [30.0, 70.0],
                                                    "mean": 40.0, "mean_ci": [30.0, 50.0], "ic": 1.5, "questions": 40}]}}
    entry = report.checkpoint_entry("sft_checkpoint-0123456789ab", "sft_checkpoint", summaries, "/x/samples.html")
    for key in ("label", "key", "trace_tasks", "trace_step_accuracy", "trace_step_accuracy_ci", "trace_final_accuracy",
                "trace_final_accuracy_ci", "cruxeval", "reval", "samples_html"):
        assert key in entry, key
    assert entry["trace_tasks"] == 64 and entry["trace_step_accuracy"] == pytest.approx(0.75)
    low, high = entry["trace_step_accuracy_ci"]
    assert 0 <= low <= 0.75 <= high <= 1
    assert entry["cruxeval"]["output_pass@1"] == 0.25 and entry["cruxeval"]["output_pass@1_ci"] == [0.13, 0.42]
    assert entry["reval"]["mean"] == 0.4 and entry["reval"]["coverage_ci"] == [0.3, 0.7]
    assert entry["trace_by_level"]["1"]["step_accuracy"] == 0.1
    assert report.checkpoint_entry("k", "ext", {}, None)["trace_step_accuracy"] is None  # nothing evaluated yet


def test_compare_is_paired_on_the_shared_tasks_and_says_so():
    change = report.compare("base_model", BASE, "sft_checkpoint", SFT[:48])
    assert change["tasks"] == 48 and change["step_accuracy_change"] == pytest.approx(0.75)
    low, high = change["step_accuracy_change_ci"]
    assert 0 < low <= 0.75 <= high
    text = report.verdict(change)
    assert text.startswith("sft_checkpoint vs base_model: step accuracy +75.0") and "better" in text
    same = report.compare("sft_checkpoint", SFT, "grpo_checkpoint", SFT)
    assert same["step_accuracy_change"] == 0.0 and "no measurable change" in report.verdict(same)
    worse = report.verdict(report.compare("sft_checkpoint", SFT, "grpo_checkpoint", BASE))
    assert "worse" in worse


def test_markdown_shows_every_interval_and_the_verdicts():
    entries = [report.checkpoint_entry(f"{label}-0123456789ab", label, {"eval_trace_gap": _gap(samples)}, None)
               for label, samples in (("base_model", BASE), ("sft_checkpoint", SFT))]
    content = {"checkpoints": entries, "comparisons": [report.compare("base_model", BASE, "sft_checkpoint", SFT)]}
    text = report.report_markdown(content)
    assert "| sft_checkpoint (0123456789ab) | 64 | 75.0 [" in text
    assert "- sft_checkpoint vs base_model: step accuracy +75.0 [" in text
    assert report.ordered(["grpo_checkpoint", "ext_mine", "base_model"]) == ["base_model", "grpo_checkpoint", "ext_mine"]
