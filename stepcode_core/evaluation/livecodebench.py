"""LiveCodeBench code execution, scored as LiveCodeBench's own harness scores it.

The rules, from ``lcb_runner/evaluation/compute_code_execution_metrics.py`` and ``utils_execute.py``:

* a generation is checked by running ``BASE_IMPORTS + code + "assert <output> == <generation>"`` in a
  process of its own under a 3 s limit, with the reliability guard (the same check as CRUXEval's,
  :mod:`stepcode_core.evaluation.check_runtime`); ``BASE_IMPORTS`` imports what LCB's programs use
  without importing it (``List`` from typing, numpy, pandas, ...), so both sandboxes provide numpy
  and pandas (:func:`sandbox.local.default_site_dirs`);
* a generation that contains the problem's input string is *skipped*: it counts neither way; only
  when every generation of a problem is skipped do they all count as wrong;
* pass@1 of a problem is the unbiased estimator over its checked generations, averaged over
  problems, in percent;
* the answer is read from a response with LCB's ``extract_execution_code``: with chain of thought,
  what follows ``[ANSWER]``; then what follows the first ``==``; then what precedes ``[/ANSWER]``,
  else the first line (:func:`extract_answer`).

Rows are LCB's execution schema (``livecodebench/execution-v2``): ``id, question_id, problem_id,
contest_id, contest_date, difficulty, function_name, code, input, output, numsteps`` (``input`` is the
call, e.g. ``countPairs(nums = [1, 2])``). A question has several samples (different code for the same
problem), so ``question_id`` repeats and the unique key is the sample's ``id`` (``sample_N``): LCB
scores each sample as its own problem and averages pass@1 over samples. LCB's data is not bundled:
the user points at a JSONL or Parquet file of rows.

Generations come in the formats LCB's runner writes and reads (:func:`read_generations`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from stepcode_core.evaluation.cruxeval import pass_at_k, run_checks

# LCB's BASE_IMPORTS, statement for statement (LCB prepends it to every check program).
BASE_IMPORTS = "\n".join([
    "from itertools import accumulate, chain, combinations, count, permutations, product, groupby, islice, repeat",
    "from copy import deepcopy",
    "from string import ascii_lowercase",
    "from math import floor, log2, log10, sqrt, comb, gcd, ceil, inf, isqrt",
    "from collections import defaultdict, deque, Counter",
    "from bisect import bisect, bisect_left, bisect_right, insort",
    "from heapq import heappush, heappop, heapify, merge",
    "from functools import reduce, cache, lru_cache",
    "from random import randrange, shuffle",
    "from operator import itemgetter, sub",
    "from re import search as re_search",
    "from os.path import commonprefix",
    "from typing import List, Tuple, Dict, Set, Optional, Union, Any, Callable, Iterable, Iterator, Generator",
    "import copy",
    "import string",
    "import math",
    "import collections",
    "import bisect",
    "import heapq",
    "import functools",
    "import random",
    "import itertools",
    "import operator",
    "import re",
    "import numpy as np",
    "import pandas as pd",
    "from math import log, prod",
    "from collections import deque, defaultdict, Counter, OrderedDict",
    "from itertools import accumulate, permutations, combinations, product, groupby, islice, chain, repeat, zip_longest, cycle",
    "from functools import lru_cache, reduce, partial",
    "from operator import iand",
    "import sys",
]) + "\n"
# What BASE_IMPORTS loads that the sandbox worker has not: imported once per worker, not per check
# (LCB's checks fork from a process that has them loaded too).
PRELOAD = ("numpy", "pandas", "random", "typing")
FIELDS = ("id", "question_id", "code", "input", "output")


def read_rows(path: str | Path) -> list[dict]:
    """LiveCodeBench code-execution rows from JSONL or Parquet; ValueError when a field is missing
    or a sample ``id`` repeats."""
    path = Path(path)
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        missing = [key for key in FIELDS if key not in row]
        if missing:
            raise ValueError(f"{path}: row {number} lacks {', '.join(missing)} (LiveCodeBench's execution schema: "
                             f"{', '.join(FIELDS)}, ...; the sample's id is the unique key)")
        if str(row["id"]) in seen:
            raise ValueError(f"{path}: rows {seen[str(row['id'])]} and {number} share the sample id {row['id']!r}")
        seen[str(row["id"])] = number
    return rows


def sample_order(rows: Sequence[dict]) -> list[dict]:
    """The rows in LCB's order (``sorted by int(id.split("_")[1])``), which its list-of-lists format follows."""
    def number(row: dict) -> tuple:
        tail = str(row["id"]).rpartition("_")[2]
        return (0, int(tail), "") if tail.isdigit() else (1, 0, str(row["id"]))
    return sorted(rows, key=number)


def saved_records(rows: Sequence[dict], responses: dict[str, list[str]], answers: dict[str, list[str]]) -> list[dict]:
    """Per-sample records as LCB's runner saves code-execution output (``insert_output``): the row,
    ``output_list`` (raw responses) and ``pred_list`` (extracted answers), in LCB's sample order."""
    return [{**row, "output_list": responses[str(row["id"])], "pred_list": answers[str(row["id"])]}
            for row in sample_order(rows)]


def check_program(row: dict, generation: str) -> str:
    return f"{BASE_IMPORTS}\n{row['code']}\nassert {row['output']} == {generation}"


def skipped(row: dict, generation: str) -> bool:
    """LCB's rule: a generation that contains the input string is not checked."""
    return str(row["input"]) in generation


def extract_answer(text: object, cot: bool = False) -> str:
    """LCB's ``extract_execution_code``: the predicted output in a model's response. Never raises."""
    if not isinstance(text, str):
        return ""
    if cot and "[ANSWER]" in text:
        text = text.split("[ANSWER]")[1].strip()
    if "==" in text:
        text = text.split("==")[1].strip()
    if "[/ANSWER]" in text:
        text = text.split("[/ANSWER]")[0].strip()
    else:
        text = text.split("\n")[0].strip()
    return text.strip()


def read_generations(path: str | Path, rows: Sequence[dict], cot: bool = False) -> dict[str, list[str]]:
    """A generations file, as ``{sample id: [generation, ...]}`` for ``rows``. Accepted, as LCB writes
    and reads them:

    * LCB's saved code-execution output (``--scenario codeexecution``, and its ``_eval_all.json``): a
      list of per-sample records with ``id`` and ``pred_list`` (the extracted answers, scored as they
      are) or only ``output_list`` (raw responses, read with LCB's extraction; ``cot`` as LCB's
      ``--cot_code_execution``);
    * ``{id: [generation, ...]}``;
    * LCB's custom-evaluator list of lists, one per sample in LCB's order (:func:`sample_order`).

    Records or keys that name a ``question_id`` instead of an ``id`` are mapped to the sample when
    the question has a single sample in ``rows``, and refused when the question repeats there (its
    samples would overwrite each other)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(raw, list) and raw and all(isinstance(item, list) for item in raw):
        if len(raw) != len(rows):
            raise ValueError(f"{path}: a list of lists needs one list per sample in LCB's order; "
                             f"it has {len(raw)}, the rows {len(rows)}")
        keyed = [(str(row["id"]), generations) for row, generations in zip(sample_order(rows), raw)]
    elif isinstance(raw, list):
        keyed = [_record_generations(path, number, record, cot) for number, record in enumerate(raw, start=1)]
    elif isinstance(raw, dict):
        keyed = [(str(key), value) for key, value in raw.items()]
    else:
        raise ValueError(f"{path}: expected {{id: [generation, ...]}} or LCB's list of per-sample records")
    by_id: dict[str, list[str]] = {}
    for key, generations in _to_sample_ids(path, keyed, rows):
        if not isinstance(generations, list) or not all(isinstance(g, str) for g in generations):
            raise ValueError(f"{path}: {key}: generations must be a list of strings")
        if key in by_id:
            raise ValueError(f"{path}: sample {key} has generations twice")
        by_id[key] = generations
    return by_id


def _record_generations(path, number: int, record: object, cot: bool) -> tuple[str, object]:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: item {number} is not a record")
    key = record.get("id", record.get("question_id"))
    if key is None:
        raise ValueError(f"{path}: record {number} has no id (LCB's code-execution records carry the sample's id)")
    if "pred_list" in record:
        return str(key), record["pred_list"]
    if "output_list" in record:
        outputs = record["output_list"]
        if not isinstance(outputs, list):
            raise ValueError(f"{path}: record {number}: output_list must be a list")
        return str(key), [extract_answer(text, cot) for text in outputs]
    if "code_list" in record:
        raise ValueError(f"{path}: record {number} holds code_list, LCB's code-generation output; its code-execution "
                         "output holds pred_list (extracted answers) and output_list (raw responses)")
    raise ValueError(f"{path}: record {number} has neither pred_list nor output_list")


def _to_sample_ids(path, keyed: list[tuple[str, object]], rows: Sequence[dict]) -> list[tuple[str, object]]:
    """Keys as sample ids: a key that is no sample id but a question's maps to its only sample."""
    ids = {str(row["id"]) for row in rows}
    samples_of: dict[str, list[str]] = {}
    for row in rows:
        samples_of.setdefault(str(row["question_id"]), []).append(str(row["id"]))
    mapped = []
    for key, generations in keyed:
        if key not in ids and key in samples_of:
            samples = samples_of[key]
            if len(samples) > 1:
                raise ValueError(
                    f"{path}: generations are keyed by question_id {key!r}, which repeats in the rows "
                    f"(samples {', '.join(samples[:4])}{', ...' if len(samples) > 4 else ''}): "
                    "key them by the sample's id, as LiveCodeBench's code-execution output does")
            key = samples[0]
        mapped.append((key, generations))
    return mapped


def score_generations(generations: dict[str, Sequence[str]], rows: Sequence[dict], sandbox) -> dict:
    """Score ``{sample id: [generation, ...]}`` as LCB does, each sample a problem of its own.
    Returns ``raw_generations``, ``raw_scored_generations`` (per generation True, False, or None when
    skipped), ``pass_at_1`` (in percent, LCB's number: the mean over samples) and ``pass_at_5`` (None
    unless every sample has five checked ones)."""
    ids = [str(row["id"]) for row in rows]
    missing = [key for key in ids if key not in generations]
    if missing:
        raise ValueError(f"generations lack {len(missing)} of {len(ids)} samples, e.g. {missing[:3]}")
    unknown = sorted(set(generations) - set(ids))
    if unknown:
        raise ValueError(f"generations name {len(unknown)} samples that are not in the rows, e.g. {unknown[:3]}")
    unique: list[list[str]] = []
    for row, key in zip(rows, ids):
        checks = {check_program(row, g): None for g in generations[key] if not skipped(row, g)}
        unique.append(list(checks))
    passed = iter(run_checks([p for programs in unique for p in programs], sandbox, preload=PRELOAD))
    verdict_of = [{program: next(passed) for program in programs} for programs in unique]
    scored: dict[str, list[bool | None]] = {}
    samples, correct = [], []
    for row, key, verdicts in zip(rows, ids, verdict_of):
        marks = [None if skipped(row, g) else verdicts[check_program(row, g)] for g in generations[key]]
        checked = [mark for mark in marks if mark is not None]
        if not checked:  # every generation skipped: all count as wrong
            checked = [False] * len(marks)
        scored[key] = marks
        samples.append(len(checked))
        correct.append(checked.count(True))
    return {
        "raw_generations": {key: list(generations[key]) for key in ids},
        "raw_scored_generations": scored,
        "pass_at_1": lcb_pass_at_1(samples, correct),
        "pass_at_5": pass_at_k(samples, correct, 5),
    }


def lcb_pass_at_1(samples: Sequence[int], correct: Sequence[int]) -> float | None:
    """pass@1 in percent as ``code_execution_metrics`` computes it: per sample ``c / n``, averaged.
    LCB's ``pass_at_k`` returns 1 when ``n - c < k``, so a sample with no generations at all
    counts as passed there; reproduced, since the number must equal LCB's."""
    if not samples:
        return None
    per_sample = [1.0 if n - c < 1 else c / n for n, c in zip(samples, correct)]
    return 100 * sum(per_sample) / len(per_sample)
