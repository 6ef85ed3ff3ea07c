"""The per-sample pages in a real browser (headless Chromium): every held-out task's states beside
the true trace, each step coloured as the verifier scored it; the counts of coloured steps equal the
verdicts; the "right answer, wrong logic" filter shows exactly those tasks; the comparison page
pairs two checkpoints on the same tasks. Real traces from the sandbox, real verdicts."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By

from stepcode_core.evaluation.samples_page import (
    mark_counts,
    render_comparison_page,
    render_samples_page,
    sample_record,
)
from stepcode_core.rewards.verify import TaskSpec, verify
from stepcode_core.training.tiny_task import tiny_task_rows


def _responses(rows: list[dict]) -> list[str]:
    """Right, right answer with a wrong state, no states, extra states, and for input tasks a right
    call and a text that is no call."""
    out, seen = [], {"output": 0, "input": 0}
    for row in rows:
        states = [(step["name"], step["value"]) for step in row["steps"]]
        variant = seen[row["task"]] % 4
        seen[row["task"]] += 1
        if row["task"] == "input":
            out.append(row["reference"] if variant % 2 == 0 else "<answer>I do not know</answer>")
        elif variant == 0:
            out.append(row["reference"])
        elif variant == 1:
            wrong = "".join(f"<state>{name}: 12345</state>" for name, _ in states[:1])
            rest = "".join(f"<state>{name}: {value}</state>" for name, value in states[1:])
            out.append(f"{wrong}{rest}<answer>{row['answer']}</answer>")
        elif variant == 2:
            out.append(f"<answer>{row['answer']}</answer>")
        else:
            extra = "".join(f"<state>{name}: {value}</state>" for name, value in states)
            out.append(f"{extra}<state>z: 0</state><state>w: 1</state><answer>0</answer>")
    return out


@pytest.fixture(scope="module")
def samples(local_sandbox):
    rows = tiny_task_rows(8, 11, local_sandbox, kinds=("output", "input"))
    responses = _responses(rows)
    verdicts = verify([TaskSpec.from_row(row) for row in rows], responses, local_sandbox)
    return [sample_record(row, text, verdict) for row, text, verdict in zip(rows, responses, verdicts)], verdicts


def _count(browser, selector: str, visible_only: bool = False) -> int:
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    return sum(e.is_displayed() for e in found) if visible_only else len(found)


def test_page_colours_every_step_as_the_verifier_scored_it(samples, browser, tmp_path):
    records, verdicts = samples
    page = tmp_path / "samples.html"
    page.write_text(render_samples_page("sft_checkpoint", {"step accuracy %": "50.0 [40.0, 60.0]"}, records))
    browser.get(page.as_uri())
    assert "sft_checkpoint" in browser.title
    counts = {mark: _count(browser, f"tr.step.{mark}") for mark in ("right", "wrong", "missing", "extra")}
    assert counts == mark_counts(records)
    assert counts["right"] == sum(sum(v.step_rewards) for v in verdicts)
    assert counts["right"] + counts["wrong"] + counts["missing"] == sum(len(v.step_rewards) for v in verdicts)
    assert all(counts[mark] > 0 for mark in counts)  # the planted responses cover every mark
    assert _count(browser, "section.sample") == len(records)
    assert _count(browser, "pre .anchor") >= len(records)  # the anchors of P' are highlighted
    verdict_marks = browser.find_elements(By.CSS_SELECTOR, ".verdict-right, .verdict-wrong")
    assert sum(e.text == "right" for e in verdict_marks) == sum(v.final_reward == 1.0 for v in verdicts)
    # The colours are really applied (a style the browser computed, not only a class name).
    right_cell = browser.find_element(By.CSS_SELECTOR, "tr.step.right td.mark")
    assert right_cell.value_of_css_property("background-color") == "rgba(200, 239, 200, 1)"
    embedded = json.loads(browser.find_element(By.ID, "counts").get_attribute("textContent"))
    assert embedded["marks"] == counts

    browser.find_element(By.CSS_SELECTOR, "input[name=show][value=rawl]").click()
    wanted = sum(r["right_answer_wrong_logic"] for r in records)
    assert wanted > 0 and _count(browser, "section.sample", visible_only=True) == wanted
    assert browser.find_element(By.ID, "shown").text == str(wanted)
    browser.find_element(By.CSS_SELECTOR, "input[name=show][value=wrong]").click()
    assert _count(browser, "section.sample", visible_only=True) == sum(not r["answer_right"] for r in records)


def test_comparison_page_pairs_the_same_tasks(samples, browser, tmp_path):
    records, _ = samples
    base = [{**r, "steps": [{**s, "mark": "missing", "predicted": None} for s in r["steps"] if s["mark"] != "extra"],
             "answer_right": False, "right_answer_wrong_logic": False} for r in records]
    page = tmp_path / "compare.html"
    page.write_text(render_comparison_page("base_model", {}, base, "sft_checkpoint", {}, records[:-2]))
    browser.get(page.as_uri())
    assert _count(browser, "section.sample") == len(records) - 2  # only the tasks both were scored on
    assert _count(browser, ".pair") == len(records) - 2
    browser.find_element(By.CSS_SELECTOR, "input[name=show][value=changed]").click()
    changed = sum(1 for a, b in zip(base, records[:-2]) if (a["answer_right"], [s["mark"] for s in a["steps"]])
                  != (b["answer_right"], [s["mark"] for s in b["steps"]]))
    assert _count(browser, "section.sample", visible_only=True) == changed > 0
