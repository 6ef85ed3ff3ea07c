"""The evaluation report: every evaluated checkpoint's numbers with their 95% intervals, the changes
between successive checkpoints on the same held-out tasks, and a verdict a person can read
without opening a file ("SFT beat the base model by 45 points [38, 52]").

Inputs are the evaluation assets' summaries (``meta.json`` of each artifact) and the trace-gap
samples (``samples.jsonl``); nothing here imports Dagster. In ``report.json`` every accuracy is a
fraction in [0, 1]; the printed tables use percent.
"""

from __future__ import annotations

from stepcode_core.evaluation.intervals import format_interval, paired_difference, percent

# The order checkpoints take in the comparisons (the training chain); other labels follow, sorted.
CHAIN = ("base_model", "sft_checkpoint", "grpo_checkpoint")
REVAL_KINDS = ("coverage", "state", "path", "output")


def _fraction(value: float | None) -> float | None:
    return None if value is None else round(value / 100.0, 4)


def _fraction_ci(interval: list[float] | None) -> list[float] | None:
    return None if interval is None else [round(bound / 100.0, 4) for bound in interval]


def checkpoint_entry(key: str, label: str, summaries: dict[str, dict], samples_html: str | None) -> dict:
    """One checkpoint of ``report.json`` from its evaluation summaries ({asset name: summary})."""
    gap = summaries.get("eval_trace_gap") or {}
    entry = {
        "label": label, "key": key,
        "weights_hash": next((s.get("weights_hash") for s in summaries.values() if s.get("weights_hash")), None),
        "trace_tasks": gap.get("samples"),
        "trace_step_accuracy": _fraction(gap.get("step_accuracy")),
        "trace_step_accuracy_ci": _fraction_ci(gap.get("step_accuracy_ci")),
        "trace_final_accuracy": _fraction(gap.get("final_accuracy")),
        "trace_final_accuracy_ci": _fraction_ci(gap.get("final_accuracy_ci")),
        "trace_right_answer_wrong_logic": _fraction(gap.get("right_answer_wrong_logic")),
        "trace_by_level": {
            level: {"tasks": numbers["samples"], "step_accuracy": _fraction(numbers["step_accuracy"]),
                    "step_accuracy_ci": _fraction_ci(numbers.get("step_accuracy_ci")),
                    "final_accuracy": _fraction(numbers["final_accuracy"]),
                    "final_accuracy_ci": _fraction_ci(numbers.get("final_accuracy_ci"))}
            for level, numbers in (gap.get("by_level") or {}).items()},
        "cruxeval": _execution_entry(summaries.get("eval_cruxeval")),
        "livecodebench": _execution_entry(summaries.get("eval_livecodebench")),
        "reval": _reval_entry(summaries.get("eval_reval")),
        "samples_html": samples_html,
    }
    return entry


def _execution_entry(summary: dict | None) -> dict | None:
    """CRUXEval / LiveCodeBench: pass@1 and its interval per mode of the first style."""
    if not summary or not summary.get("results"):
        return None if not summary else {"skipped": summary.get("skipped")}
    style = summary["results"][0]["style"]
    entry: dict = {"problems": summary.get("problems"), "style": style}
    for row in summary["results"]:
        if row["style"] != style:
            continue
        prefix = f"{row['mode']}_" if row.get("mode") else ""
        entry[f"{prefix}pass@1"] = _fraction(row["pass@1"])
        entry[f"{prefix}pass@1_ci"] = _fraction_ci(row.get("pass@1_ci"))
    entry["headline"] = _fraction(summary.get("headline"))
    return entry


def _reval_entry(summary: dict | None) -> dict | None:
    if not summary or not summary.get("results"):
        return None if not summary else {"skipped": summary.get("skipped")}
    row = summary["results"][0]
    entry: dict = {"programs": summary.get("programs"), "questions": row.get("questions"), "style": row["style"]}
    for kind in (*REVAL_KINDS, "mean"):
        if kind in row:
            entry[kind] = _fraction(row[kind])
            entry[f"{kind}_ci"] = _fraction_ci(row.get(f"{kind}_ci"))
    entry["ic"] = row.get("ic")
    return entry


def task_marks(samples: list[dict]) -> dict[str, tuple[int, int, int]]:
    """{task_id: (right states, scored states, answer right)} from a trace-gap ``samples.jsonl``."""
    marks = {}
    for sample in samples:
        right = sum(step["mark"] == "right" for step in sample["steps"])
        scored = sum(step["mark"] in ("right", "wrong", "missing") for step in sample["steps"])
        marks[sample["task_id"]] = (right, scored, int(sample["answer_right"]))
    return marks


def paired_change(a: tuple, b: tuple) -> dict:
    """B minus A (fractions) on the same tasks, from per-task columns ``(right states, scored states,
    right answers, answers)``, index i the same task in both: step and final accuracy differences
    with paired-bootstrap 95% intervals (None where there is nothing to compare)."""
    def ratio(correct, totals):
        return sum(correct) / sum(totals) if sum(totals) else None

    def difference(before, after):
        return None if before is None or after is None else round(after - before, 4)

    def rounded(interval):
        return None if interval is None else [round(x, 4) for x in interval]

    return {
        "step_accuracy_change": difference(ratio(a[0], a[1]), ratio(b[0], b[1])),
        "step_accuracy_change_ci": rounded(paired_difference(a[0], a[1], b[0], b[1])),
        "final_accuracy_change": difference(ratio(a[2], a[3]), ratio(b[2], b[3])),
        "final_accuracy_change_ci": rounded(paired_difference(a[2], a[3], b[2], b[3])),
    }


def compare(label_a: str, samples_a: list[dict], label_b: str, samples_b: list[dict]) -> dict:
    """The change from checkpoint A to B on the held-out tasks both were scored on: step and final
    accuracy differences (fractions) with paired-bootstrap 95% intervals."""
    a, b = task_marks(samples_a), task_marks(samples_b)
    shared = [task for task in a if task in b]

    def columns(marks):
        return ([marks[t][0] for t in shared], [marks[t][1] for t in shared], [marks[t][2] for t in shared],
                [1] * len(shared))

    return {"from": label_a, "to": label_b, "tasks": len(shared), **paired_change(columns(a), columns(b))}


def verdict(change: dict) -> str:
    """One sentence on a comparison: did B beat A, beyond the noise of this many tasks?"""
    value, interval = change["step_accuracy_change"], change["step_accuracy_change_ci"]
    if value is None or interval is None:
        return f"{change['to']} vs {change['from']}: no scored states to compare"
    points = format_interval(100 * value, percent(interval))
    if interval[0] > 0:
        outcome = "better"
    elif interval[1] < 0:
        outcome = "worse"
    else:
        outcome = "no measurable change"
    return (f"{change['to']} vs {change['from']}: step accuracy {'+' if value >= 0 else ''}{points} points on "
            f"{change['tasks']} held-out tasks: {outcome} (95% interval"
            f"{' excludes' if outcome != 'no measurable change' else ' includes'} 0)")


def order_key(label: str) -> tuple[int, str]:
    """The training chain first, in its order, then other labels by name."""
    return (CHAIN.index(label) if label in CHAIN else len(CHAIN), label)


def ordered(labels: list[str]) -> list[str]:
    return sorted(labels, key=order_key)


def report_markdown(report: dict) -> str:
    """The checkpoints' table (percent, each with its interval), the verdicts and the page links."""
    header = ("| checkpoint | held-out tasks | step acc % | final acc % | CRUXEval pass@1 % | REval mean % |\n"
              "|---|---|---|---|---|---|\n")
    lines = []
    for entry in report["checkpoints"]:
        crux, rev = entry.get("cruxeval") or {}, entry.get("reval") or {}

        def shown(value, interval):
            return format_interval(None if value is None else 100 * value, percent(interval))

        lines.append(
            f"| {entry['label']} ({entry['key'][-12:]}) | {entry['trace_tasks'] or '-'} | "
            f"{shown(entry['trace_step_accuracy'], entry['trace_step_accuracy_ci'])} | "
            f"{shown(entry['trace_final_accuracy'], entry['trace_final_accuracy_ci'])} | "
            f"{_crux_cell(crux)} | {'skipped' if rev.get('skipped') else shown(rev.get('mean'), rev.get('mean_ci'))} |")
    text = header + "\n".join(lines) + "\n"
    skipped = sorted({f"{name}: skipped: {reason}" for entry in report["checkpoints"]
                      for name, key in (("CRUXEval", "cruxeval"), ("REval", "reval"), ("LiveCodeBench", "livecodebench"))
                      if (reason := (entry.get(key) or {}).get("skipped"))})
    if skipped:
        text += "\n" + "\n".join(f"- {line}" for line in skipped) + "\n"
    if report.get("comparisons"):
        text += "\n" + "\n".join(f"- {verdict(change)}" for change in report["comparisons"]) + "\n"
    return text


def _crux_cell(crux: dict) -> str:
    if crux.get("skipped"):
        return "skipped"
    parts = []
    for mode in ("output", "input"):
        if crux.get(f"{mode}_pass@1") is not None:
            parts.append(f"{mode[0]} " + format_interval(100 * crux[f"{mode}_pass@1"], percent(crux.get(f"{mode}_pass@1_ci"))))
    return "; ".join(parts) or "-"
