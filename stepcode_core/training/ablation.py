"""The ablation in miniature: GRPO's three reward modes (``terminal``, ``step``, ``bilevel``), each
over several seeds, from the same warm start, scored on the same held-out tasks. This module turns
the runs' held-out numbers into ``ablation.json`` and its plot; the runs themselves are the
``ablation_checkpoint`` asset's partitions.
"""

from __future__ import annotations

import statistics
from pathlib import Path

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
    the line every mode starts from."""
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
    return {"modes": modes, "start": start, "best_step_accuracy": best}


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
    if summary.get("best_step_accuracy"):
        lines.append(f"highest mean step accuracy: {summary['best_step_accuracy']}")
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
