"""Ground-truth traces: running P' in the sandbox, and parsing what it prints.

The sandbox runs P''s ``harness`` rendering through the trace runtime
(:mod:`stepcode_core.tracing.runtime`, the prelude of every batch). Each anchor records the
``repr`` of its value; when the program ends, the records go to stdout as lines
``\\x1e<nonce>:a:<site>:<json repr>``. The nonce is fresh per run, so nothing the program prints on its
own can pass for an anchor line, and whatever the program prints stays recoverable as
``Trace.program_stdout``. Anchors above the cap are counted, not recorded, so a recursive program
cannot flood the output, and the trace says it was over the cap. A run killed before its end
(timeout, memory) yields an incomplete trace.
"""

from __future__ import annotations

import json
import random
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from sandbox import Batch, ExecutionRequest
from stepcode_core.tracing import runtime
from stepcode_core.tracing.anchors import ANCHOR_FUNCTION, InstrumentedProgram

_MARK = "\x1e"
# What still differs between two runs when only printed addresses do (the runtime already strips
# the ones of default reprs): masked, two such runs agree.
_HEX = re.compile(r"0x[0-9a-fA-F]+")

RUNTIME_SOURCE = Path(runtime.__file__).read_text(encoding="utf-8")
"""The trace runtime (:mod:`stepcode_core.tracing.runtime`) as the prelude of every trace batch:
compiled once per sandbox run, each program is then one call of ``trace_program``."""
if runtime.ANCHOR_FUNCTION != ANCHOR_FUNCTION:
    raise ImportError("the trace runtime must bind the name that anchors.py writes into every harness")


@dataclass(frozen=True)
class Step:
    """One executed anchor: the state ``name: value`` at ``line`` of the original program."""

    name: str
    value: str  # repr of the value
    line: int
    site_id: int

    def text(self) -> str:
        return f"{self.name}: {self.value}"


@dataclass
class Trace:
    steps: list[Step]
    anchor_lines: int  # anchors executed (counted even past the cap)
    max_anchor_lines: int
    suppressed: int  # hits not written (over the cap, or over a dense policy's per-site hit cap)
    result: str | None  # repr of the call's value
    matches_expected: bool | None
    error: str | None  # "Type: message" of an exception that escaped the program or the call
    program_stdout: str  # what the program printed itself
    complete: bool  # the runner reached its end (False: killed, timed out, or the output was cut)
    deterministic: bool | None = None  # with repeats > 1 or a cross-check: every run matched the first
    unstable_repr: bool = False  # the runs differ only in addresses a repr printed (not nondeterminism)
    nondeterminism: str | None = None  # what differed between two runs, when anything did
    same_as_original: bool | None = None  # P' returned, raised and printed what P did (None: unchecked)
    original_difference: str | None = None  # what differed, when it did

    @property
    def over_cap(self) -> bool:
        return self.anchor_lines > self.max_anchor_lines

    def anchor_text(self) -> str:
        """The anchor lines as P' prints them (``NAME: value`` per line)."""
        return "\n".join(step.text() for step in self.steps)

    def to_dict(self) -> dict:
        return {**asdict(self), "over_cap": self.over_cap}


def new_nonce() -> str:
    return secrets.token_hex(8)


def build_trace_script(
    program: InstrumentedProgram,
    call: str | None = None,
    expected: str | None = None,
    nonce: str | None = None,
    repeats: int = 1,
) -> tuple[str, str]:
    """Return ``(script, nonce)``: a self-contained script (the trace runtime, then one call of its
    ``trace_program``) that runs P', then ``call`` (e.g. ``"f(1, 2)"``), compares the value with the
    expression ``expected`` when given, and with ``repeats`` > 1 runs the whole program again in fresh
    namespaces and reports whether any run differed; the trace is the first run's. For one program
    outside a batch (a test, a notebook); :func:`run_traces` sends the runtime as a batch prelude."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    nonce = nonce or new_nonce()
    arguments = (nonce, program.max_anchor_lines, program.hit_cap, program.harness, call, expected, repeats)
    return f"{RUNTIME_SOURCE}\ntrace_program{arguments!r}\n", nonce


def uninstrumented(code: str) -> InstrumentedProgram:
    """P itself, wrapped as a program without anchors."""
    return InstrumentedProgram(
        original=code, code=code, harness=code, policy="none", sites=(), max_anchor_lines=0, hit_cap=None, line_map={}
    )


# One pattern for every nonce (compiling one per run cost more than the parse itself).
_RECORD = re.compile(re.escape(_MARK) + r"([0-9a-f]+):(a:\d+|result|match|error|differs_detail|differs|original|count)"
                     r":([^\n]*)\n?")


def describe_difference(part: str, first, second) -> tuple[str, bool]:
    """``(description, only_addresses)`` of two runs that differ in ``part``."""
    one, two = (value if isinstance(value, str) else json.dumps(value) for value in (first, second))
    only_addresses = _HEX.sub("0x?", one) == _HEX.sub("0x?", two)
    return f"the runs differ in {part}: {one[:200]} vs {two[:200]}", only_addresses


def parse_trace(stdout: str, program: InstrumentedProgram, nonce: str) -> Trace:
    """Split the runner's stdout into anchor steps, the call's outcome and the program's own output.
    Never raises: a line that does not parse counts as program output."""
    steps: list[Step] = []
    own_output: list[str] = []
    result = error = None
    matches = differs = None
    nondeterminism, unstable, original = None, False, "unchecked"
    total, suppressed, complete = 0, 0, False
    position = 0
    for found in _RECORD.finditer(stdout):
        own_output.append(stdout[position : found.start()])
        position = found.end()
        if found.group(1) != nonce:  # looks like a record, but not this run's: the program printed it
            own_output.append(found.group(0))
            continue
        kind, raw = found.group(2), found.group(3)
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError:
            own_output.append(found.group(0))
            continue
        if kind.startswith("a:"):
            site_id = int(kind[2:])
            if 0 <= site_id < len(program.sites) and isinstance(payload, str):
                site = program.sites[site_id]
                steps.append(Step(site.name, payload, site.line, site_id))
        elif kind == "result":
            result = payload
        elif kind == "match":
            matches = bool(payload)
        elif kind == "error":
            error = payload
        elif kind == "differs":
            differs = bool(payload)
        elif kind == "differs_detail" and isinstance(payload, list) and len(payload) == 3:
            nondeterminism, unstable = describe_difference(*payload)
        elif kind == "original":
            original = payload
        elif kind == "count" and isinstance(payload, list) and len(payload) == 2:
            total, suppressed, complete = int(payload[0]), int(payload[1]), True
    own_output.append(stdout[position:])
    if not complete:  # the run was cut short: count what we saw
        total = len(steps)
    same_as_original = original_difference = None
    if original != "unchecked" and complete:
        same_as_original = original is None
        if isinstance(original, list) and len(original) == 3:
            original_difference = f"{original[0]}: P' gives {original[1][:200]}, P gives {original[2][:200]}"
    return Trace(
        steps=steps,
        anchor_lines=total,
        max_anchor_lines=program.max_anchor_lines,
        suppressed=suppressed,
        result=result,
        matches_expected=matches,
        error=error,
        program_stdout="".join(own_output),
        complete=complete,
        deterministic=None if differs is None or not complete else not differs,
        unstable_repr=bool(differs and unstable),
        nondeterminism=nondeterminism if differs else None,
        same_as_original=same_as_original,
        original_difference=original_difference,
    )


_ANCHOR_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*|return)\s*:\s?(.*?)\s*$")


def parse_anchor_lines(text: str) -> list[tuple[str, str]]:
    """Parse ``NAME: value`` lines (as P' prints them, or as a model writes them) into pairs.
    Lines of another shape are skipped; never raises."""
    if not isinstance(text, str):
        return []
    pairs = []
    for line in text.splitlines():
        found = _ANCHOR_LINE.match(line)
        if found:
            pairs.append((found.group(1), found.group(2)))
    return pairs


@dataclass(frozen=True)
class TraceJob:
    """Run ``program`` (then ``call``, compared with ``expected``) for its trace."""

    program: InstrumentedProgram
    call: str | None = None
    expected: str | None = None
    repeats: int = 1  # 2: run twice in one sandbox run and report whether the runs agree
    check_original: bool = True  # also run P itself and report whether P' behaved the same


@dataclass
class TracedRun:
    trace: Trace
    status: str  # the sandbox's verdict: ok | error | timeout | memory | output_limit | killed
    stderr: str
    duration_s: float


def run_traces(jobs: list[TraceJob], sandbox, *, timeout_s: float = 5.0, memory_mb: int = 512,
               batch: int = 64, cross_check: bool = False) -> list[TracedRun]:
    """Execute every job in ``sandbox`` (see :mod:`sandbox`), in order: one sandbox batch whose
    prelude is the trace runtime, each program an item in a process of its own, at most ``batch``
    programs to a sandbox run (``batch=1``: a sandbox run each).

    ``cross_check`` runs every job a second time under another ``PYTHONHASHSEED`` (a fresh
    interpreter), and ``Trace.deterministic`` says whether both runs agree: this catches
    randomness, clocks and addresses, and also set or dict orders that depend on string hashing,
    which two runs in one interpreter cannot show. The second run's seed is fresh for every call; the
    first runs under the worker's own, so a worker restarts its interpreter once per call, not twice
    (the pool hands out every chunk of the first run before any of the second)."""
    seeds = [None, random.SystemRandom().randint(1, 2**32 - 1)] if cross_check else [None]
    passes = [[_trace_item(job) for job in jobs] for _ in seeds]
    batches = [Batch([ExecutionRequest(code=job.program.harness, stdin=params, timeout_s=timeout_s, memory_mb=memory_mb)
                      for job, (params, _) in zip(jobs, items)], prelude=RUNTIME_SOURCE, hash_seed=seed)
               for items, seed in zip(passes, seeds)]
    outputs = sandbox.run_batches(batches, chunk_size=max(1, batch))
    runs_by_pass = [
        [TracedRun(parse_trace(result.stdout, job.program, nonce), result.status, result.stderr, result.duration_s)
         for job, (_, nonce), result in zip(jobs, snippets, results)]
        for snippets, results in zip(passes, outputs)
    ]
    runs = runs_by_pass[0]
    if cross_check:
        for run, other in zip(runs, runs_by_pass[1]):
            mine, theirs = _observable(run), _observable(other)
            part = next((key for key in mine if mine[key] != theirs[key]), None)
            if part is not None:
                trace = run.trace
                trace.deterministic = False
                trace.nondeterminism, _ = describe_difference(part, mine[part], theirs[part])
                trace.unstable_repr = all(
                    _HEX.sub("0x?", str(mine[key])) == _HEX.sub("0x?", str(theirs[key])) for key in mine)
            elif run.trace.deterministic is not False:
                run.trace.deterministic = True
    return runs


def _trace_item(job: TraceJob) -> tuple[str, str]:
    """``(stdin, nonce)`` of a trace item: its code is the harness itself, which the worker compiles
    before the fork; the runtime's ``__run_item__`` reads these parameters."""
    if job.repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {job.repeats}")
    nonce = new_nonce()
    original = job.program.original if job.check_original and job.program.original != job.program.harness else None
    params = {"nonce": nonce, "record_limit": job.program.max_anchor_lines, "hit_cap": job.program.hit_cap,
              "call": job.call, "expected": job.expected, "repeats": job.repeats, "original": original}
    return json.dumps(params), nonce


def _observable(run: TracedRun) -> dict:
    trace = run.trace
    return {"status": run.status, "result": trace.result, "error": trace.error, "steps": trace.anchor_text(),
            "anchors": trace.anchor_lines, "output": trace.program_stdout}
