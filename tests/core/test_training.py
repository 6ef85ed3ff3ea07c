"""Training pieces that need no training run: presets, settings, data join, the per-token mapping
with the real tokenizer, plots. The learning runs are in test_learning.py (marker ``learning``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.rewards.verify import Verdict
from stepcode_core.tracing.anchors import instrument
from stepcode_core.training.curves import plot_curves
from stepcode_core.training.settings import PRESETS, batch_shape, preset
from stepcode_core.training.tasks import load_tasks, select_tasks
from stepcode_core.training.trainer import group_token_advantages, per_token


def test_presets_are_consistent():
    """Each preset can run as it is: its GRPO step splits into whole micro-batches, its SFT context
    holds its GRPO responses, its modes and engines are ones the code knows."""
    for name, settings in PRESETS.items():
        for processes in (1, 2) if name == "cpu-smoke" else (1, 8):  # where each preset is meant to run
            batch_shape(settings.grpo_prompts_per_step * settings.grpo_num_generations, settings.grpo_micro_batch,
                        processes)
            batch_shape(settings.sft_batch_size, settings.sft_micro_batch, processes)
        assert settings.grpo_num_generations >= 2, f"{name}: a group of one has no advantage"
        assert settings.sft_max_length >= settings.grpo_max_response_tokens, name
        assert preset(name) == settings and preset(name, seed=7).seed == 7
    assert preset("cpu-smoke", grpo_mode="terminal").grpo_mode == "terminal"
    with pytest.raises(ValueError, match="grpo_mode"):
        preset("cpu-smoke", grpo_mode="ppo")
    with pytest.raises(ValueError, match="unknown training settings"):
        preset("paper", learning_rate=1.0)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")


def test_batch_shape_keeps_the_global_batch_whatever_the_processes():
    # The paper's GRPO step: 32 prompts x G = 5 = 160 sequences, micro-batches of 4.
    assert batch_shape(160, 4, 1) == (4, 40)
    assert batch_shape(160, 4, 8) == (4, 5)
    assert batch_shape(18, 0, 2) == (9, 1)  # 0: a process's whole share at once
    with pytest.raises(ValueError, match="do not split over 4 processes"):
        batch_shape(18, 0, 4)
    with pytest.raises(ValueError, match=r"micro batch \(4\) must divide each process's 9"):
        batch_shape(18, 4, 2)


def test_load_tasks_joins_code_and_keeps_the_policy(tmp_path):
    code = "def f(x):\n    y = x + 1\n    return y\n"
    (tmp_path / "tasks").mkdir()
    rows = [{"task_id": f"p{i}:{kind}", "program_id": f"p{i}", "task": kind, "prompt": "...", "policy": policy,
             "instrumented_code": instrument(code, policy).code} for i, (kind, policy) in
            enumerate([("output", "paper"), ("input", "dense")])]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tasks" / "train.parquet")
    pq.write_table(pa.Table.from_pylist([{"program_id": "p0", "code": code}, {"program_id": "p1", "code": code}]),
                   tmp_path / "train.parquet")
    tasks = load_tasks(tmp_path, "train")
    assert [t["code"] for t in tasks] == [code, code]
    assert [t["policy"] for t in tasks] == ["paper", "dense"]  # read from the rows, not guessed
    assert [t["task"] for t in select_tasks(tasks, "input", 0, seed=0)] == ["input"]
    assert len(select_tasks(tasks, "output,input", 1, seed=0)) == 1


def test_group_token_advantages_bilevel_by_hand():
    # a group of 2 with traces of 2 states (output prediction): sample 0 all right, sample 1 all wrong
    verdicts = [Verdict([1.0, 1.0], 1.0), Verdict([0.0, 0.0], 0.0)]
    s = 1 / np.sqrt(2)  # every column {1, 0}: mean 1/2, sample std sqrt(1/2)
    rows = group_token_advantages(verdicts, "bilevel", lam=0.3)
    np.testing.assert_allclose(rows[0], [s + 0.3 * 2, s + 0.3 * 2, s + 0.3 * 1], atol=1e-5)
    np.testing.assert_allclose(rows[1], [-s, -s, -s], atol=1e-5)
    # ragged (input prediction): the second sample's predicted input traced to one state only
    ragged = group_token_advantages([Verdict([1.0, 1.0], 1.0), Verdict([1.0], 0.0)], "step", lam=0.3)
    assert [len(row) for row in ragged] == [3, 2] and np.isfinite(np.concatenate(ragged)).all()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(materialize_embedded_model(stepcode_home() / "models"))


def test_per_token_with_the_real_tokenizer(tokenizer):
    text = "First y.<state>y: 11</state>\nthen<state>return: 11</state>\n<answer>11</answer>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    decode = lambda part: tokenizer.decode(part, skip_special_tokens=True)  # noqa: E731
    values = per_token(np.array([0.5, -1.0, 2.0]), decode(ids), ids, decode)
    assert len(values) == len(ids)
    # tokens up to "</state>" of y get 0.5; then up to the second "</state>" -1.0; the answer (and EOS) 2.0
    pieces = [decode(ids[: t + 1]) for t in range(len(ids))]
    first_end = text.index("</state>") + len("</state>")
    second_end = text.index("</state>", first_end) + len("</state>")
    for t, value in enumerate(values):
        start = len(decode(ids[:t]))
        expected = 0.5 if start < first_end else (-1.0 if start < second_end else 2.0)
        assert value == expected, (t, pieces[t], value)
    # a response with more states than the trace: extra states belong to the final step
    values = per_token(np.array([0.5, 2.0]), decode(ids), ids, decode)
    assert set(values[: 3]) == {0.5} and values[-1] == 2.0


def test_plot_curves(tmp_path):
    curves = [{"step": 1, "reward": 0.1, "step_accuracy": 0.2, "loss": 0.5},
              {"step": 2, "reward": 0.3, "step_accuracy": 0.4, "loss": 0.4}]
    png = plot_curves(curves, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves([], tmp_path / "empty.png").is_file()


def test_set_overrides_parse_json_values_and_refuse_a_missing_value():
    """``stepcode train --set`` and ``stepcode ablation --set`` share one parser."""
    from stepcode_core.training.settings import parse_overrides

    assert parse_overrides(["grpo_learning_rate=5e-5", "bf16=true", "rollout=vllm", "tasks=\"output\""]) == {
        "grpo_learning_rate": 5e-5, "bf16": True, "rollout": "vllm", "tasks": "output"}
    for bad in ("grpo_lambda", "=0.7"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_overrides([bad])
