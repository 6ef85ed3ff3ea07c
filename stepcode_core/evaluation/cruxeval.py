"""CRUXEval scoring, official-compatible and fast.

The official harness (facebookresearch/cruxeval, ``evaluation/``) checks each generation with
``exec(f"{code}\\nassert {output} == {generation}", {})`` in a fresh process under a 3 s
``setitimer`` limit, its IO swallowed and destructive ``os``/``shutil`` calls disabled, after two
anti-cheat rules: in input mode a generation without ``f(`` fails, in output mode a generation that
contains ``f(<input>)`` fails. pass@k is the unbiased estimator, averaged over the 800 problems ×100.

We keep those semantics check for check — each check still runs in a process of its own, forked
inside the sandbox, with the same wall-clock limit and the same disabled calls — and change only the
cost: one sandbox run per problem forks all its checks at once from a warm interpreter (their limits
overlap, as they do across the official process pool), and identical generations of a problem are
checked once. A problem whose sandbox run fails as a whole is re-checked one generation per sandbox
run. One approximation: ``shutil`` and ``subprocess`` are imported (and their calls disabled) only
when a check names them, which spares every other check their import time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIMEOUT_S = 3.0
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


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for ``c`` correct of ``n`` samples (Chen et al., 2021), as CRUXEval computes it."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def cheats(mode: str, generation: str, problem: Problem) -> bool:
    """The official anti-cheat rules: such a generation is scored False without running."""
    if mode == "input":
        return "f(" not in generation
    return f"f({problem.input})" in generation


def check_program(problem: Problem, generation: str) -> str:
    return f"{problem.code}\nassert {problem.output} == {generation}"


# Runs inside the sandbox: reads {"programs": [...], "timeout": s} on stdin, forks one child per
# program, prints one JSON list of booleans. Each child disables what the official harness disables.
_BATCH_RUNNER = r'''
import json, os, select, signal, sys, time

class _Timeout(Exception):
    pass

def _guard():
    import builtins
    builtins.exit = None
    builtins.quit = None
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in ("kill", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
                 "forkpty", "killpg", "rename", "renames", "truncate", "replace", "unlink", "fchmod",
                 "fchown", "chmod", "chown", "chroot", "lchflags", "lchmod", "lchown", "getcwd", "chdir"):
        setattr(os, name, None)
    if "shutil" in sys.modules:
        sys.modules["shutil"].rmtree = sys.modules["shutil"].move = sys.modules["shutil"].chown = None
    if "subprocess" in sys.modules:
        sys.modules["subprocess"].Popen = None
    builtins.help = None
    for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
        sys.modules[name] = None

class _WriteOnly:
    def write(self, text):
        return len(text)
    def flush(self):
        pass
    def read(self, *args):
        raise OSError
    readline = readlines = read
    def readable(self):
        return False

def _check(program, timeout):
    def on_alarm(signum, frame):
        raise _Timeout()
    signal.signal(signal.SIGALRM, on_alarm)
    sink = _WriteOnly()
    sys.stdout = sys.stderr = sys.stdin = sink
    try:
        _guard()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            exec(program, {})
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        return b"passed"
    except _Timeout:
        return b"timed out"
    except BaseException:
        return b"failed"

payload = json.loads(sys.stdin.read())
timeout, programs = payload["timeout"], payload["programs"]
if any("shutil" in p or "subprocess" in p for p in programs):
    import shutil, subprocess  # imported before the fork, so that the guard can disable them
# Every check of the problem at once, each in its own process: their time limits overlap, as they
# do across the official harness's process pool.
children = {}
for index, program in enumerate(programs):
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.write(write_end, _check(program, timeout))
        os._exit(0)
    os.close(write_end)
    children[read_end] = (index, pid, time.monotonic() + timeout + 1)  # the official join(timeout + 1)
verdicts = [False] * len(programs)
while children:
    now = time.monotonic()
    wait = max(0.0, min(deadline for _, _, deadline in children.values()) - now)
    ready, _, _ = select.select(list(children), [], [], wait)
    now = time.monotonic()
    for fd in list(children):
        index, pid, deadline = children[fd]
        if fd in ready or now >= deadline:
            answer = os.read(fd, 64) if fd in ready else b""
            verdicts[index] = answer == b"passed"
            os.close(fd)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            del children[fd]
print(json.dumps(verdicts))
'''


CHECKS_PER_RUN = 16  # checks that share one sandbox run (they run in parallel, each in its own process)


def _chunks(sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive indices grouped so that each group's sizes sum to at most ``limit`` (a larger
    single item gets a group of its own)."""
    chunks: list[list[int]] = []
    total = 0
    for index, size in enumerate(sizes):
        if not chunks or total + size > limit:
            chunks.append([])
            total = 0
        chunks[-1].append(index)
        total += size
    return chunks


def _batch_request(programs: list[str]):
    from sandbox import ExecutionRequest

    budget = TIMEOUT_S + 1 + 0.5 * len(programs) + 5
    return ExecutionRequest(
        code=_BATCH_RUNNER,
        stdin=json.dumps({"programs": programs, "timeout": TIMEOUT_S}),
        timeout_s=min(budget, 3600),
        memory_mb=2048,
    )


def _verdicts(result, expected: int) -> list[bool] | None:
    if result.status != "ok":
        return None
    try:
        verdicts = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    if not isinstance(verdicts, list) or len(verdicts) != expected:
        return None
    return [verdict is True for verdict in verdicts]


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
    missing = [problem.id for problem in problems if problem.id not in generations]
    if missing:
        raise ValueError(f"generations lack {len(missing)} problems, e.g. {missing[:3]}; keys must be sample_i")
    for problem in problems:
        if not isinstance(generations[problem.id], (list, tuple)) or not all(
            isinstance(g, str) for g in generations[problem.id]
        ):
            raise ValueError(f"{problem.id}: generations must be a list of strings")

    # Unique programs to run, per problem; cheating generations never run.
    unique: list[list[str]] = []
    for problem in problems:
        programs = {
            check_program(problem, g): None for g in generations[problem.id] if not cheat_rule(mode, g, problem)
        }
        unique.append(list(programs))
    # Several problems per sandbox run: the run's set-up, not the checks, dominated the time.
    chunks = _chunks([len(programs) for programs in unique], CHECKS_PER_RUN)
    results = sandbox.run_batch([_batch_request([p for i in chunk for p in unique[i]]) for chunk in chunks])
    verdict_of: list[dict[str, bool]] = [{} for _ in unique]
    retry: list[tuple[int, str]] = []
    for chunk, result in zip(chunks, results):
        programs = [(i, p) for i in chunk for p in unique[i]]
        verdicts = _verdicts(result, len(programs)) if programs else []
        if verdicts is None:  # the whole run failed: check each program alone
            retry += programs
            verdicts = [False] * len(programs)
        for (index, program), verdict in zip(programs, verdicts):
            verdict_of[index][program] = verdict
    if retry:
        alone = sandbox.run_batch([_batch_request([program]) for _, program in retry])
        for (index, program), result in zip(retry, alone):
            verdicts = _verdicts(result, 1)
            verdict_of[index][program] = bool(verdicts and verdicts[0])

    scored: dict[str, list[bool]] = {}
    pass1, pass5 = [], []
    for problem, verdicts in zip(problems, verdict_of):
        row = [
            False if cheat_rule(mode, g, problem) else verdicts[check_program(problem, g)]
            for g in generations[problem.id]
        ]
        scored[problem.id] = row
        n, c = len(row), row.count(True)
        pass1.append(pass_at_k(n, c, 1))
        pass5.append(pass_at_k(n, c, 5))
    return {
        "raw_generations": dict(generations),
        "raw_scored_generations": scored,
        "pass_at_1": sum(pass1) / len(pass1) * 100,
        "pass_at_5": sum(pass5) / len(pass5) * 100,
    }


def read_livecodebench_rows(path: str | Path) -> list[dict]:
    """LiveCodeBench code-execution rows (``question_id, contest_id, contest_date, difficulty,
    function_name, code, input, output, numsteps``) from JSONL or Parquet."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = [key for key in ("question_id", "code", "input", "output") if rows and key not in rows[0]]
    if missing:
        raise ValueError(f"{path}: LiveCodeBench rows lack {missing}")
    return rows


def load_livecodebench(path: str | Path) -> list[Problem]:
    """LiveCodeBench execution rows as problems whose ids are the question ids. The check is
    CRUXEval's, ``assert output == generation``."""
    rows = read_livecodebench_rows(path)
    return [Problem(str(row["question_id"]), row["code"], row["input"], row["output"]) for row in rows]


def livecodebench_cheats(mode: str, generation: str, problem: Problem) -> bool:
    """LiveCodeBench's rule: a predicted output that contains the input string is wrong."""
    return problem.input in generation
