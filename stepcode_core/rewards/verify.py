"""Rewards of model responses, the final one verified by execution in the sandbox.

* output prediction: the states are compared with the trace of the given input; the answer is right
  when ``assert <true output> == <answer>`` passes, run the way CRUXEval's harness runs it
  (:func:`stepcode_core.evaluation.cruxeval.score_generations`: each check a sandbox item of its own,
  3 s limit, its anti-cheat rule), so that one sample cannot change another's verdict;
* input prediction: the answer must be one call of the entry point (read with ``ast``, never run
  here); the sandbox runs P' on it with :func:`stepcode_core.tracing.runner.run_traces`, which gives both
  ``f(pred) == output`` and the trace of the *predicted* input, against which the states are scored.

Model text only ever runs inside the sandbox. Nothing here raises on arbitrary response text: an
unreadable response, answer or call scores 0.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from stepcode_core.evaluation.cruxeval import Problem, score_generations
from stepcode_core.rewards.responses import parse_response
from stepcode_core.rewards.steps import step_rewards
from stepcode_core.tracing.anchors import (
    InstrumentationError,
    InstrumentedProgram,
    instrument,
)
from stepcode_core.tracing.runner import TraceJob, run_traces

MAX_ANSWER_CHARS = 20_000  # longer answers are not run (a literal that long is not a plausible output)


@dataclass(frozen=True)
class TaskSpec:
    """What the verifier needs from a task row (``tasks/*.parquet`` joined with its program's code)."""

    task: str  # output | input
    entry_point: str | None
    input: str  # arguments of the given call
    output: str  # repr of the given call's value
    steps: tuple[tuple[str, str], ...]  # true states of the given input
    code: str  # the program P; P' for tracing a predicted input is rebuilt from it
    policy: str = "paper"

    @classmethod
    def from_row(cls, row: dict) -> "TaskSpec":
        steps = tuple((step["name"], step["value"]) for step in row.get("steps") or [])
        return cls(row["task"], row.get("entry_point"), row["input"], row.get("output") or "None", steps,
                   row["code"], row.get("policy") or "paper")


@dataclass
class Verdict:
    step_rewards: list[float]  # one per state of the trace the response is compared with
    final_reward: float  # 1.0: the answer was verified by execution
    answer: str | None = None
    note: str = ""  # why the final reward is 0, when known
    predicted_steps: list[tuple[str, str]] = field(default_factory=list)  # input prediction: trace of the predicted input

    @property
    def reward(self) -> float:
        """One number per response: the mean over the states and the final answer."""
        return (sum(self.step_rewards) + self.final_reward) / (len(self.step_rewards) + 1)


def step_accuracy(verdicts: Iterable[Verdict]) -> float | None:
    """**Step accuracy**, the one definition StepCode reports everywhere (held-out scores, training
    curves, the trace gap): of all the true states of all the responses, the fraction predicted
    right. States are pooled, not averaged per response, so a long trace weighs more than a short
    one, as in the paper's step accuracy; a response whose trace has no states adds nothing. None
    when there are no states at all."""
    marks = [mark for verdict in verdicts for mark in verdict.step_rewards]
    return sum(marks) / len(marks) if marks else None


@lru_cache(maxsize=4096)
def program_for(code: str, policy: str = "paper") -> InstrumentedProgram:
    return instrument(code, policy=policy)  # type: ignore[arg-type]


def predicted_call(answer: str | None, entry_point: str | None) -> str | None:
    """The answer as one call of the entry point (``f(...)``), or None. Parsed, never executed."""
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    try:
        tree = ast.parse(answer.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    body = tree.body
    if not (isinstance(body, ast.Call) and isinstance(body.func, ast.Name) and body.func.id == (entry_point or "f")):
        return None
    return answer.strip()


def verify(specs: list[TaskSpec], responses: list[str], sandbox, *, timeout_s: float = 3.0,
           memory_mb: int = 512) -> list[Verdict]:
    """Score every response against its task: step rewards and the execution-verified final reward.
    One pass over the sandbox for the output tasks and one for the input tasks, whatever the count."""
    if len(specs) != len(responses):
        raise ValueError(f"{len(specs)} tasks but {len(responses)} responses")
    parsed = [parse_response(text) for text in responses]
    verdicts: list[Verdict | None] = [None] * len(specs)
    outputs = [i for i, spec in enumerate(specs) if spec.task == "output"]
    inputs = [i for i, spec in enumerate(specs) if spec.task == "input"]
    for i, spec in enumerate(specs):
        if spec.task not in ("output", "input"):
            raise ValueError(f"unknown task {spec.task!r}")

    # Output prediction: the states against the given trace; the answers checked CRUXEval's way.
    finals = _check_outputs([specs[i] for i in outputs], [parsed[i].answer for i in outputs], sandbox)
    for i, final in zip(outputs, finals):
        answer = parsed[i].answer
        verdicts[i] = Verdict(step_rewards(parsed[i].pairs, list(specs[i].steps)), final, answer,
                              "" if final else ("no answer" if answer is None else "wrong output"))

    # Input prediction: run P' on each predicted call; its trace is the truth for the states.
    jobs, owners = [], []
    for i in inputs:
        spec, call = specs[i], predicted_call(parsed[i].answer, specs[i].entry_point)
        if call is None:
            verdicts[i] = Verdict([], 0.0, parsed[i].answer, "answer is not a call of the entry point")
            continue
        try:
            program = program_for(spec.code, spec.policy)
        except InstrumentationError as exc:
            verdicts[i] = Verdict([], 0.0, call, f"program cannot be instrumented: {exc}")
            continue
        jobs.append(TraceJob(program, call, spec.output))
        owners.append(i)
    runs = run_traces(jobs, sandbox, timeout_s=timeout_s, memory_mb=memory_mb) if jobs else []
    for i, run in zip(owners, runs):
        trace = run.trace
        truth = [(step.name, step.value) for step in trace.steps]
        right = run.status == "ok" and trace.error is None and trace.matches_expected is True
        note = "" if right else (trace.error or (run.status if run.status != "ok" else "f(pred) != output"))
        verdicts[i] = Verdict(step_rewards(parsed[i].pairs, truth), 1.0 if right else 0.0, parsed[i].answer,
                              note, truth)
    return verdicts  # type: ignore[return-value]


def _check_outputs(specs: list[TaskSpec], answers: list[str | None], sandbox) -> list[float]:
    """``assert output == answer`` for every answer, grouped by task so that one sandbox run checks
    all answers to one prompt."""
    problems: dict[tuple, Problem] = {}
    generations: dict[str, list[str]] = {}
    for spec, answer in zip(specs, answers):
        key = (spec.code, spec.entry_point, spec.input, spec.output)
        if key not in problems:
            problems[key] = Problem(f"task_{len(problems)}", spec.code, spec.input, spec.output)
            generations[problems[key].id] = []
        if answer is not None and len(answer) <= MAX_ANSWER_CHARS:
            generations[problems[key].id].append(answer)
    entry_of = {problems[key].id: key[1] or "f" for key in problems}
    asked = [problem for problem in problems.values() if generations[problem.id]]
    if not asked:
        return [0.0] * len(specs)

    def cheats(mode: str, generation: str, problem: Problem) -> bool:  # CRUXEval's rule, for any entry name
        return f"{entry_of[problem.id]}({problem.input})" in generation

    scored = score_generations({p.id: generations[p.id] for p in asked}, asked, "output", sandbox, cheat_rule=cheats)
    verdict = {(pid, g): ok for pid, gens in scored["raw_generations"].items()
               for g, ok in zip(gens, scored["raw_scored_generations"][pid])}
    finals = []
    for spec, answer in zip(specs, answers):
        pid = problems[(spec.code, spec.entry_point, spec.input, spec.output)].id
        finals.append(1.0 if answer is not None and verdict.get((pid, answer)) else 0.0)
    return finals
