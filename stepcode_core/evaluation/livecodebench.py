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

Rows are LCB's execution schema: ``question_id, contest_id, contest_date, difficulty, function_name,
code, input, output, numsteps`` (``input`` is the call, e.g. ``countPairs(nums = [1, 2])``). LCB's
data is not bundled: the user points at a JSONL or Parquet file of rows.
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
FIELDS = ("question_id", "code", "input", "output")


def read_rows(path: str | Path) -> list[dict]:
    """LiveCodeBench code-execution rows from JSONL or Parquet; ValueError when a field is missing."""
    path = Path(path)
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, row in enumerate(rows, start=1):
        missing = [key for key in FIELDS if key not in row]
        if missing:
            raise ValueError(f"{path}: row {number} lacks {', '.join(missing)} (LiveCodeBench's execution schema)")
    return rows


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


def read_generations(path: str | Path) -> dict[str, list[str]]:
    """A generations file: ``{question_id: [generation, ...]}``, or LCB's list of
    ``{"question_id", "code_list"}`` records (``code_list`` holds the extracted answers)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(raw, list):
        try:
            raw = {str(item["question_id"]): item["code_list"] for item in raw}
        except (KeyError, TypeError):
            raise ValueError(f"{path}: a list must hold {{'question_id', 'code_list'}} records") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected {{question_id: [generation, ...]}}")
    for key, value in raw.items():
        if not isinstance(value, list) or not all(isinstance(g, str) for g in value):
            raise ValueError(f"{path}: {key}: generations must be a list of strings")
    return {str(key): value for key, value in raw.items()}


def score_generations(generations: dict[str, Sequence[str]], rows: Sequence[dict], sandbox) -> dict:
    """Score ``{question_id: [generation, ...]}`` as LCB does. Returns ``raw_generations``,
    ``raw_scored_generations`` (per generation True, False, or None when skipped), ``pass_at_1`` (in
    percent, LCB's number) and ``pass_at_5`` (None unless every problem has five checked ones)."""
    ids = [str(row["question_id"]) for row in rows]
    missing = [qid for qid in ids if qid not in generations]
    if missing:
        raise ValueError(f"generations lack {len(missing)} problems, e.g. {missing[:3]}")
    unique: list[list[str]] = []
    for row, qid in zip(rows, ids):
        checks = {check_program(row, g): None for g in generations[qid] if not skipped(row, g)}
        unique.append(list(checks))
    passed = iter(run_checks([p for programs in unique for p in programs], sandbox, preload=PRELOAD))
    verdict_of = [{program: next(passed) for program in programs} for programs in unique]
    scored: dict[str, list[bool | None]] = {}
    samples, correct = [], []
    for row, qid, verdicts in zip(rows, ids, verdict_of):
        marks = [None if skipped(row, g) else verdicts[check_program(row, g)] for g in generations[qid]]
        checked = [mark for mark in marks if mark is not None]
        if not checked:  # every generation skipped: all count as wrong
            checked = [False] * len(marks)
        scored[qid] = marks
        samples.append(len(checked))
        correct.append(checked.count(True))
    return {
        "raw_generations": {qid: list(generations[qid]) for qid in ids},
        "raw_scored_generations": scored,
        "pass_at_1": pass_at_k(samples, correct, 1),
        "pass_at_5": pass_at_k(samples, correct, 5),
    }
