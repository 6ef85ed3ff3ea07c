"""The ablation: GRPO's three reward modes (``terminal``, ``step``, ``bilevel``), each over several
seeds, from the same warm start, scored on the same held-out tasks. This module turns the runs'
held-out numbers into ``ablation.json`` and its plot; the runs themselves are asset partitions.

:func:`summarize` takes the miniature's aggregate numbers (``ablation_checkpoint``);
:func:`compare_on_tasks` takes per-task samples (the real model's ``real_ablation_scores``), which
pair every run with the warm start and every mode with every other on the same tasks, so each
change comes with a paired-bootstrap 95% interval.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from stepcode_core.evaluation.intervals import difference_of_means
from stepcode_core.evaluation.report import paired_change, task_marks
from stepcode_core.training.advantages import MODES

METRICS = ("step_accuracy", "final_accuracy", "gap")


def _spread(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4) if values else None,
            "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0 if values else None,
            "values": [round(v, 4) for v in values]}


def summarize(runs: list[dict], start: dict | None = None) -> dict:
    """``ablation.json`` from one dict per run (``mode``, ``seed``, ``step_accuracy``,
    ``final_accuracy``: held-out fractions). ``gap`` is final minus step accuracy (the paper's "right
    answer, wrong logic" measure: smaller is better). ``start``: the warm start's held-out numbers,
    the line every mode starts from. ``pairs_over_seeds``: each mode against each other, the
    difference of their means with a Welch 95% interval over the seeds (the ranking's uncertainty
    when the seeds, not the tasks, are what varies most)."""
    modes = {}
    for mode in MODES:
        chosen = sorted((run for run in runs if run["mode"] == mode), key=lambda run: run["seed"])
        if not chosen:
            continue
        values = {
            "step_accuracy": [run["step_accuracy"] for run in chosen if run.get("step_accuracy") is not None],
            "final_accuracy": [run["final_accuracy"] for run in chosen if run.get("final_accuracy") is not None],
            "gap": [run["final_accuracy"] - run["step_accuracy"] for run in chosen
                    if run.get("step_accuracy") is not None and run.get("final_accuracy") is not None],
        }
        modes[mode] = {"seeds": [run["seed"] for run in chosen], **{k: _spread(v) for k, v in values.items()}}
    best = max(modes, key=lambda mode: modes[mode]["step_accuracy"]["mean"] or 0.0) if modes else None
    ordered = list(modes)
    pairs = [{"from": a, "to": b, **_over_seeds(modes[a], modes[b])}
             for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    return {"modes": modes, "start": start, "best_step_accuracy": best, "pairs_over_seeds": pairs}


def _over_seeds(a: dict, b: dict) -> dict:
    """Mode B's mean step and final accuracy minus mode A's over their seeds, each with Welch's 95%
    interval (None below two seeds a side)."""
    change = {}
    for metric in ("step_accuracy", "final_accuracy"):
        before, after = a[metric]["values"], b[metric]["values"]
        interval = difference_of_means(before, after)
        change[f"{metric}_change"] = round(statistics.fmean(after) - statistics.fmean(before), 4) if before and after else None
        change[f"{metric}_change_ci"] = None if interval is None else [round(x, 4) for x in interval]
    return change


def with_common_settings(runs: list[dict]) -> tuple[list[dict], int]:
    """The runs whose training settings (``run["settings"]``, mode and seed aside) are the most
    common ones, and how many were left out: a report never pools runs trained differently (a
    variant tried on a few runs with ``stepcode ablation --set``). Between equally common settings,
    those of the latest run (``run["at"]``, a timestamp): the variant just tried."""
    def recipe(run: dict) -> str:
        return json.dumps({k: v for k, v in (run.get("settings") or {}).items() if k not in ("grpo_mode", "seed")},
                          sort_keys=True)

    counts = Counter(recipe(run) for run in runs)
    if not counts:
        return [], 0
    most = max(counts.values())
    tied = [run for run in runs if counts[recipe(run)] == most]
    common = recipe(max(tied, key=lambda run: run.get("at") or 0.0))
    kept = [run for run in runs if recipe(run) == common]
    return kept, len(runs) - len(kept)


def _pooled(sample_lists: list[list[dict]], tasks: list[str]) -> tuple[list[int], list[int], list[int], list[int]]:
    """Per task, summed over the runs (seeds): right states, scored states, right answers, answers."""
    marks = [task_marks(samples) for samples in sample_lists]
    missing = [task for task in tasks if any(task not in run for run in marks)]
    if missing:
        raise ValueError(f"every run must be scored on the same tasks; {len(missing)} missing, e.g. {missing[0]}")
    return ([sum(run[t][0] for run in marks) for t in tasks], [sum(run[t][1] for run in marks) for t in tasks],
            [sum(run[t][2] for run in marks) for t in tasks], [len(marks)] * len(tasks))


def compare_on_tasks(start_samples: list[dict], runs: list[dict]) -> dict:
    """``ablation.json`` from per-task samples (trace-gap ``samples.jsonl`` records): the warm
    start's, and one ``{"mode", "seed", "samples"}`` per GRPO run, all on the same held-out tasks.

    Per mode: step and final accuracy and their gap, mean and std over the seeds (as
    :func:`summarize`), and ``vs_start``, the change from the warm start. ``pairs``: each mode
    against each other. A change pools a mode's seeds per task (right states over scored states,
    summed over the seeds) and resamples the tasks jointly, so its interval is the tasks' noise for
    that many seeds, not the spread between seeds (shown beside it as the std)."""
    tasks = [sample["task_id"] for sample in start_samples]
    start = _pooled([start_samples], tasks)
    summary = summarize([{"mode": run["mode"], "seed": run["seed"], **_accuracies(run["samples"])} for run in runs],
                        _accuracies(start_samples))
    pooled = {}
    for mode, numbers in summary["modes"].items():
        chosen = sorted((run for run in runs if run["mode"] == mode), key=lambda run: run["seed"])
        pooled[mode] = _pooled([run["samples"] for run in chosen], tasks)
        numbers["vs_start"] = paired_change(start, pooled[mode])
    ordered = [mode for mode in MODES if mode in pooled]
    summary["pairs"] = [{"from": a, "to": b, **paired_change(pooled[a], pooled[b])}
                        for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    summary["tasks"] = len(tasks)
    return summary


def _accuracies(samples: list[dict]) -> dict:
    """Step accuracy (right over scored states, pooled) and final accuracy of one run's samples."""
    marks = task_marks(samples).values()
    scored = sum(m[1] for m in marks)
    return {"step_accuracy": sum(m[0] for m in marks) / scored if scored else None,
            "final_accuracy": sum(m[2] for m in marks) / len(marks) if marks else None}


def _signed(change: float, interval: list[float] | None) -> str:
    shown = f"{'+' if change >= 0 else ''}{100 * change:.1f}"
    return shown if interval is None else f"{shown} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def describe_changes(summary: dict) -> list[str]:
    """The paired changes of :func:`compare_on_tasks`, in points with their 95% intervals."""
    lines = []
    for mode, numbers in summary["modes"].items():
        change = numbers["vs_start"]
        lines.append(f"{mode} - warm start: step accuracy {_signed(change['step_accuracy_change'], change['step_accuracy_change_ci'])}, "
                     f"final accuracy {_signed(change['final_accuracy_change'], change['final_accuracy_change_ci'])}")
    for pair in summary.get("pairs", []):
        lines.append(f"{pair['to']} - {pair['from']}: step accuracy "
                     f"{_signed(pair['step_accuracy_change'], pair['step_accuracy_change_ci'])}, final accuracy "
                     f"{_signed(pair['final_accuracy_change'], pair['final_accuracy_change_ci'])}")
    return lines


def describe(summary: dict) -> list[str]:
    """One line per mode (mean ± std over seeds, percent), then which mode led."""
    lines = []
    start = summary.get("start") or {}
    if start.get("step_accuracy") is not None:
        lines.append(f"warm start: step accuracy {100 * start['step_accuracy']:.1f}%, "
                     f"final accuracy {100 * start.get('final_accuracy', 0.0):.1f}%")
    for mode, numbers in summary["modes"].items():
        shown = ", ".join(f"{metric.replace('_', ' ')} {100 * numbers[metric]['mean']:.1f} ± {100 * numbers[metric]['std']:.1f}"
                          for metric in METRICS if numbers[metric]["mean"] is not None)
        lines.append(f"{mode:8s} ({len(numbers['seeds'])} seeds): {shown}")
    for pair in summary.get("pairs_over_seeds", []):
        if pair["step_accuracy_change"] is not None:
            lines.append(f"{pair['to']} - {pair['from']} over seeds: step accuracy "
                         f"{_signed(pair['step_accuracy_change'], pair['step_accuracy_change_ci'])}, final accuracy "
                         f"{_signed(pair['final_accuracy_change'], pair['final_accuracy_change_ci'])}")
    if summary.get("best_step_accuracy"):
        lines.append(f"highest mean step accuracy: {summary['best_step_accuracy']}")
    if summary.get("left_out_other_settings"):
        lines.append(f"left out: {summary['left_out_other_settings']} run(s) trained with other settings than the rest")
    return lines


def plot(summary: dict, path: Path, title: str = "GRPO reward modes (mean ± std over seeds)") -> None:
    """Step and final accuracy per mode, bars at the mean with the std, every seed a dot; the warm
    start as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["modes"])
    figure, axis = plt.subplots(figsize=(6.5, 3.8), dpi=100)
    width = 0.38
    for offset, metric, colour in ((-width / 2, "step_accuracy", "#4C72B0"), (width / 2, "final_accuracy", "#DD8452")):
        means = [100 * (summary["modes"][m][metric]["mean"] or 0.0) for m in modes]
        stds = [100 * (summary["modes"][m][metric]["std"] or 0.0) for m in modes]
        positions = [i + offset for i in range(len(modes))]
        axis.bar(positions, means, width, yerr=stds, capsize=4, color=colour, alpha=0.8, label=metric.replace("_", " "))
        for position, mode in zip(positions, modes):
            values = summary["modes"][mode][metric]["values"]
            axis.scatter([position] * len(values), [100 * v for v in values], color="black", s=10, zorder=3)
        start = (summary.get("start") or {}).get(metric)
        if start is not None:
            axis.axhline(100 * start, color=colour, linestyle="--", linewidth=1)
    axis.set_xticks(range(len(modes)), modes)
    axis.set_ylabel("held-out accuracy, % (dashed: warm start)")
    axis.set_ylim(0, 100)
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
