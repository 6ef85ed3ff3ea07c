"""Per-sample pages: what a checkpoint predicted against what the program did, as one
self-contained HTML file (inline CSS and a few lines of JavaScript; no network, no server).

Every held-out task shows its program P' (anchor lines highlighted), the true states beside the
predicted ones, each step marked ``right`` / ``wrong`` / ``missing`` / ``extra``, and the final
answer with its verdict. The marks come from the verifier's verdict alone (step rewards are by
position, :func:`stepcode_core.rewards.steps.step_rewards`), so the page's counts equal the numbers
reported: ``right`` + ``wrong`` + ``missing`` are the scored states, ``extra`` the predictions past
the trace. Filters show only "right answer, wrong logic" (final answer verified, some state wrong),
wrong answers, or one level. A comparison page puts two checkpoints side by side on the same tasks.
"""

from __future__ import annotations

import html
import json

from stepcode_core.rewards.responses import parse_response

MARKS = ("right", "wrong", "missing", "extra")


def _state_text(pair: tuple[str | None, str] | list | None) -> str | None:
    if pair is None:
        return None
    name, value = pair
    return f"{name}: {value}" if name is not None else str(value)


def sample_record(row: dict, response: str, verdict) -> dict:
    """One task's sample as the pages (and ``samples.jsonl``) store it; ``verdict`` is the
    verifier's :class:`stepcode_core.rewards.verify.Verdict` (not imported: the pages, and
    eval_report that renders one, do not depend on the verifier's code)."""
    predicted = parse_response(response).pairs
    scored = verdict.step_rewards
    given = [(step["name"], step["value"]) for step in row.get("steps") or []]
    # Input prediction compares the states with the trace of the predicted input.
    truth = list(verdict.predicted_steps) if row["task"] == "input" else given
    if len(truth) != len(scored):
        truth = (truth + [None] * len(scored))[: len(scored)]
    steps = []
    for index in range(max(len(scored), len(predicted))):
        guess = _state_text(predicted[index]) if index < len(predicted) else None
        if index < len(scored):
            mark = "right" if scored[index] == 1.0 else ("missing" if guess is None else "wrong")
            true_text = _state_text(truth[index])
        else:
            mark, true_text = "extra", None
        steps.append({"true": true_text, "predicted": guess, "mark": mark})
    final_right = verdict.final_reward == 1.0
    entry = row.get("entry_point") or "f"
    return {
        "task_id": row["task_id"], "task": row["task"], "level": row.get("level"),
        "program": row["instrumented_code"],
        "question": f"{entry}({row['input']})" if row["task"] == "output" else f"{entry}(?) == {row.get('output')}",
        "expected": row["answer"], "given_trace": [_state_text(pair) for pair in given],
        "steps": steps, "answer": verdict.answer, "answer_right": final_right, "note": verdict.note,
        "right_answer_wrong_logic": final_right and any(mark != 1.0 for mark in scored),
        "response": response,
    }


def mark_counts(samples: list[dict]) -> dict[str, int]:
    """How many steps of each mark the pages colour."""
    counts = dict.fromkeys(MARKS, 0)
    for sample in samples:
        for step in sample["steps"]:
            counts[step["mark"]] += 1
    return counts


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.05em;margin:0 0 .4em}
.summary{background:#f4f6f8;padding:.6em 1em;border-radius:6px;margin-bottom:1em}
.filters{margin:.6em 0 1em}.filters label{margin-right:1.2em}
.sample{border:1px solid #ccd;border-radius:6px;padding:.7em 1em;margin:.8em 0}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1em}
pre{background:#fafafa;border:1px solid #eee;padding:.5em;margin:.3em 0;font-size:.85em;overflow-x:auto}
pre .anchor{background:#fff3c4}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0}
td,th{border:1px solid #ddd;padding:.15em .5em;text-align:left;font-family:monospace}
tr.right td.mark{background:#c8efc8}tr.wrong td.mark{background:#f7c6c6}
tr.missing td.mark{background:#e4e4e4}tr.extra td.mark{background:#d6e4ff}
.verdict-right{color:#17752a;font-weight:bold}.verdict-wrong{color:#b3261e;font-weight:bold}
.legend span{padding:0 .4em;margin-right:.5em;border-radius:3px}
details{margin-top:.3em}.meta{color:#666;font-size:.85em}
"""

_SCRIPT = """
function applyFilters(){
  const only = document.querySelector('input[name=show]:checked').value;
  const level = document.getElementById('level').value;
  let shown = 0;
  document.querySelectorAll('.sample').forEach(s => {
    const ok = (only === 'all' || s.dataset[only] === 'true') && (level === 'all' || s.dataset.level === level);
    s.style.display = ok ? '' : 'none'; if (ok) shown++;
  });
  document.getElementById('shown').textContent = shown;
}
document.querySelectorAll('input[name=show], #level').forEach(e => e.addEventListener('change', applyFilters));
applyFilters();
"""


def _program_html(code: str) -> str:
    lines = []
    for line in code.splitlines():
        escaped = html.escape(line)
        lines.append(f'<span class="anchor">{escaped}</span>' if "print(f'" in line else escaped)
    return "<pre>" + "\n".join(lines) + "</pre>"


def _steps_table(sample: dict) -> str:
    rows = ["<tr><th>#</th><th>true state</th><th>predicted</th><th>step</th></tr>"]
    for index, step in enumerate(sample["steps"], 1):
        rows.append(
            f'<tr class="step {step["mark"]}"><td>{index}</td><td>{html.escape(step["true"] or "")}</td>'
            f'<td>{html.escape(step["predicted"] or "")}</td><td class="mark">{step["mark"]}</td></tr>')
    if not sample["steps"]:
        rows.append('<tr><td colspan="4">no states scored' + (f' ({html.escape(sample["note"])})' if sample["note"]
                                                               else "") + "</td></tr>")
    verdict = "right" if sample["answer_right"] else "wrong"
    answer = "(none)" if sample["answer"] is None else sample["answer"]
    note = f' <span class="meta">{html.escape(sample["note"])}</span>' if sample["note"] and not sample["answer_right"] else ""
    return (f'<table>{"".join(rows)}</table><div>answer <code>{html.escape(answer)}</code> '
            f'<span class="verdict-{verdict}">{verdict}</span>{note}</div>'
            f'<details><summary>raw response</summary><pre>{html.escape(sample["response"])}</pre></details>')


def _data_attributes(samples: list[dict]) -> str:
    rawl = any(s["right_answer_wrong_logic"] for s in samples)
    wrong = any(not s["answer_right"] for s in samples)
    changed = len({(s["answer_right"], tuple(st["mark"] for st in s["steps"])) for s in samples}) > 1
    level = samples[0]["level"]
    return (f'data-rawl="{str(rawl).lower()}" data-wrong="{str(wrong).lower()}" data-changed="{str(changed).lower()}"'
            f' data-level="{"none" if level is None else level}" data-task="{samples[0]["task"]}"')


def _header(sample: dict) -> str:
    level = "" if sample["level"] is None else f", level {sample['level']}"
    given = ""
    if sample["task"] == "input" and sample["given_trace"]:
        given = (' <span class="meta">trace of the given input: '
                 + html.escape(" | ".join(t or "" for t in sample["given_trace"])) + "</span>")
    return (f'<h2>{html.escape(sample["task_id"])} <span class="meta">({sample["task"]} prediction{level})</span></h2>'
            f'<div><code>{html.escape(sample["question"])}</code>, expected <code>{html.escape(sample["expected"])}'
            f'</code>{given}</div>')


def _filters(samples: list[dict], extra: str = "") -> str:
    levels = sorted({str(s["level"]) for s in samples if s["level"] is not None})
    options = "".join(f'<option value="{level}">level {level}</option>' for level in levels)
    return (
        '<div class="filters">show: '
        '<label><input type="radio" name="show" value="all" checked> all</label>'
        '<label><input type="radio" name="show" value="rawl"> right answer, wrong logic</label>'
        '<label><input type="radio" name="show" value="wrong"> wrong answer</label>' + extra +
        f'<select id="level"><option value="all">every level</option>{options}</select> '
        '<span class="meta"><span id="shown"></span> shown</span></div>'
        '<div class="legend meta">steps: <span style="background:#c8efc8">right</span><span style="background:#f7c6c6">'
        'wrong</span><span style="background:#e4e4e4">missing</span><span style="background:#d6e4ff">extra</span></div>')


def _page(title: str, summary_html: str, filters: str, body: str, data: dict) -> str:
    embedded = json.dumps(data).replace("</", "<\\/")  # a JSON island cannot close its script tag
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<div class="summary">{summary_html}</div>{filters}{body}'
            f'<script type="application/json" id="counts">{embedded}</script>'
            f"<script>{_SCRIPT}</script></body></html>")


def _summary(label: str, summary: dict, samples: list[dict]) -> str:
    counts = mark_counts(samples)
    numbers = " &middot; ".join(f"{html.escape(k)} <b>{html.escape(str(v))}</b>" for k, v in summary.items())
    marks = ", ".join(f"{counts[m]} {m}" for m in MARKS)
    return f"<div><b>{html.escape(label)}</b>: {len(samples)} tasks; {numbers}</div><div class=meta>steps: {marks}</div>"


def render_samples_page(label: str, summary: dict, samples: list[dict]) -> str:
    """The page of one checkpoint; ``summary`` is shown as given (e.g. step accuracy with its
    interval)."""
    body = "".join(
        f'<section class="sample" {_data_attributes([s])}>{_header(s)}{_program_html(s["program"])}{_steps_table(s)}'
        "</section>" for s in samples)
    return _page(f"Held-out samples: {label}", _summary(label, summary, samples), _filters(samples), body,
                 {"marks": mark_counts(samples), "tasks": len(samples)})


def render_comparison_page(label_a: str, summary_a: dict, samples_a: list[dict], label_b: str, summary_b: dict,
                           samples_b: list[dict]) -> str:
    """Two checkpoints on the tasks both were scored on, side by side (A left, B right); the filters
    apply to either side, and "changed" keeps the tasks whose verdicts differ."""
    by_id = {s["task_id"]: s for s in samples_b}
    pairs = [(a, by_id[a["task_id"]]) for a in samples_a if a["task_id"] in by_id]
    body = "".join(
        f'<section class="sample" {_data_attributes([a, b])}>{_header(a)}{_program_html(a["program"])}'
        f'<div class="pair"><div><b>{html.escape(label_a)}</b>{_steps_table(a)}</div>'
        f'<div><b>{html.escape(label_b)}</b>{_steps_table(b)}</div></div></section>' for a, b in pairs)
    both = [a for a, _ in pairs]
    summary = _summary(label_a, summary_a, both) + _summary(label_b, summary_b, [b for _, b in pairs])
    changed = '<label><input type="radio" name="show" value="changed"> changed verdicts</label>'
    return _page(f"{label_a} vs {label_b}", summary, _filters(both, changed), body,
                 {"tasks": len(pairs), "marks_a": mark_counts(both), "marks_b": mark_counts([b for _, b in pairs])})
