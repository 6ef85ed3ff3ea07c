"""A small trace task for learning tests and benchmarks: short programs of two anchored steps, with
compact prompts, so that GRPO fits a CPU budget.

:func:`tiny_model` builds the randomly initialised small Llama these tasks are learnt by in tests and
in the ablation.

Ground truth comes the same way as for the trace dataset: P' is built by :func:`instrument` and run
in the sandbox by :func:`run_traces`; rows have the columns of ``tasks/*.parquet`` plus ``code`` and
``policy`` (what :func:`stepcode_core.training.tasks.load_tasks` adds).
"""

from __future__ import annotations

import random
from pathlib import Path

from stepcode_core.data import tasks as task_text
from stepcode_core.tracing.anchors import instrument
from stepcode_core.tracing.runner import TraceJob, run_traces

_TEMPLATES = [  # one assignment, then the return: values a 135M model can learn to predict
    ("int", "def f(x):\n    y = x\n    return y\n"),
    ("int", "def f(x):\n    y = x + 1\n    return y\n"),
    ("str", "def f(s):\n    t = s\n    return t\n"),
    ("str", "def f(s):\n    t = s + '{w}'\n    return t\n"),
    ("list", "def f(xs):\n    ys = xs\n    return ys\n"),
    ("list", "def f(xs):\n    ys = xs + [{a}]\n    return ys\n"),
]
_WORDS = ["ab", "c", "xy", "q", "no", "hi"]


def compact_prompt(instrumented_code: str, entry_point: str, arguments: str, task: str, output: str) -> str:
    # The format (<state>NAME: value</state> ... <answer>...</answer>) is taught by SFT, not spelled out.
    if task == "output":
        return f"```python\n{instrumented_code}\n```\nTrace `{entry_point}({arguments})`."
    return f"```python\n{instrumented_code}\n```\nFind x with `{entry_point}(x) == {output}`."


def tiny_programs(count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` distinct (code, arguments) pairs."""
    rng = random.Random(seed)
    seen, programs = set(), []
    while len(programs) < count:
        kind, template = rng.choice(_TEMPLATES)
        code = template.format(a=rng.randint(1, 9), w=rng.choice(_WORDS))
        if kind == "int":
            arguments = str(rng.randint(0, 12))
        elif kind == "str":
            arguments = repr(rng.choice(_WORDS))
        else:
            arguments = repr([rng.randint(0, 5) for _ in range(rng.randint(1, 3))])
        if (code, arguments) not in seen:
            seen.add((code, arguments))
            programs.append((code, arguments))
    return programs


def tiny_task_rows(count: int, seed: int, sandbox, kinds: tuple[str, ...] = ("output",)) -> list[dict]:
    """Task rows for ``count`` programs (one row per program and kind), traced in ``sandbox``."""
    programs = tiny_programs(count, seed)
    instrumented = [instrument(code) for code, _ in programs]
    runs = run_traces([TraceJob(program, f"f({arguments})") for program, (_, arguments) in zip(instrumented, programs)],
                      sandbox)
    rows = []
    for index, ((code, arguments), program, run) in enumerate(zip(programs, instrumented, runs)):
        if run.status != "ok" or run.trace.error or run.trace.result is None:
            raise RuntimeError(f"tiny program failed to trace: {code!r} on {arguments}: {run.trace.error or run.status}")
        steps = [{"name": step.name, "value": step.value, "line": step.line} for step in run.trace.steps]
        pairs = [(step["name"], step["value"]) for step in steps]
        output = run.trace.result
        for kind in kinds:
            answer = output if kind == "output" else f"f({arguments})"
            rows.append({
                "task_id": f"tiny-{seed}-{index}:{kind}", "program_id": f"tiny-{seed}-{index}", "task": kind,
                "source": "tiny", "entry_point": "f", "instrumented_code": program.code, "input": arguments,
                "output": output, "steps": steps, "answer": answer, "split": "train",
                "prompt": compact_prompt(program.code, "f", arguments, kind, output),
                "reference": task_text.reference_response(pairs, answer), "code": code, "policy": "paper",
            })
    return rows


# ChatML without SmolLM2's default system prompt: the tiny model has no use for it, and under the
# retrained tokenizer it is 64 of a prompt's 145 tokens (measured).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_model(folder, tokenizer_dir, corpus: list[str], *, vocab_size: int = 400, layers: int = 2, hidden: int = 128,
               heads: int = 4, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` (``layers`` decoder layers, ``hidden`` wide, tied
    embeddings), saved with its tokenizer as a Hugging Face folder under ``folder``. The tokenizer is
    ``tokenizer_dir``'s (pre-tokenizer, special tokens) retrained as a ``vocab_size`` BPE on ``corpus``
    (the texts the model will see), with :data:`CHAT_TEMPLATE`: a 49K vocabulary would make the LM
    head most of a CPU step. The model knows nothing, not even the language: SFT has to teach it the
    task. For learning tests and benchmarks where a pretrained model's rollouts do not fit a CPU budget."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir).train_new_from_iterator(corpus, vocab_size=vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)  # the initial weights are a function of the seed
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_task_dataset(folder: str | Path, train: list[dict], val: list[dict]) -> Path:
    """Task rows in ``trace_dataset``'s layout (``tasks/{split}.parquet`` and the programs' code in
    ``{split}.parquet``), what :func:`stepcode_core.training.tasks.load_tasks` and the training child read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    (folder / "tasks").mkdir(parents=True, exist_ok=True)
    for split, part in (("train", train), ("val", val)):
        pq.write_table(pa.Table.from_pylist([{k: v for k, v in row.items() if k != "code"} for row in part]),
                       folder / "tasks" / f"{split}.parquet")
        programs = {row["program_id"]: {"program_id": row["program_id"], "code": row["code"]} for row in part}
        pq.write_table(pa.Table.from_pylist(list(programs.values())), folder / f"{split}.parquet")
    return folder
