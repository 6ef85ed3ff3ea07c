"""Ground-truth traces: the script that runs P' in the sandbox, and the parser of what it prints.

The script executes P''s ``harness`` rendering. Each anchor records the ``repr`` of its value;
when the program ends, the records go to stdout as lines ``\\x1e<nonce>:a:<site>:<json repr>``. The
nonce is fresh per run, so nothing the program prints on its own can pass for an anchor line, and
whatever the program prints stays recoverable as ``Trace.program_stdout``. Anchors above the cap
are counted, not recorded, so a recursive program cannot flood the output, and the trace says it
was over the cap. A run killed before its end (timeout, memory) yields an incomplete trace.
"""

from __future__ import annotations

import json
import random
import re
import secrets
from dataclasses import asdict, dataclass, field

from stepcode_core.tracing.anchors import ANCHOR_FUNCTION, InstrumentedProgram

_MARK = "\x1e"
# A default object repr holds a memory address: it changes from run to run.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")

TRACE_RUNTIME = r'''
import builtins as _builtins, io as _io, json as _json, sys as _sys, traceback as _traceback


def _make_anchor(record_limit, hit_cap):
    # __stepcode_anchor__ for one run: records (site, repr(value)) of up to record_limit anchors and
    # at most hit_cap hits a site, and counts every anchor executed.
    records = []
    record = records.append
    hits = {}
    total = 0

    def anchor(site, value):
        nonlocal total
        total += 1
        if total > record_limit:
            return
        if hit_cap is not None:
            seen = hits[site] = hits.get(site, 0) + 1
            if seen > hit_cap:
                return
        try:
            record((site, repr(value)))
        except Exception as exc:  # P' must behave as P: a failing repr is reported, never raised
            record((site, "<repr failed: " + type(exc).__name__ + ">"))

    return anchor, records, lambda: total


class _Capture(_io.StringIO):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def write(self, text):
        if self.tell() > 1 << 20:  # a flood goes straight out, so the sandbox's output cap ends the run
            return self.out.write(text)
        return super().write(text)


def _trace_program(nonce, record_limit, hit_cap, source, call, expected, repeats):
    out = _sys.stdout
    prefix = "\x1e" + nonce + ":"
    compiled = []  # compiled inside the first run's try: a compile error is the program's error

    def emit(kind, payload):
        out.write(prefix + kind + ":" + _json.dumps(payload) + "\n")

    def run_once():
        # One execution in a fresh namespace: (outcome, anchor records, anchors executed, printed text).
        anchor, records, executed = _make_anchor(record_limit, hit_cap)
        _builtins.__stepcode_anchor__ = anchor
        namespace = {"__name__": "__main__", "__builtins__": _builtins}
        outcome = {}
        _sys.stdout = captured = _Capture(out)
        try:
            if not compiled:
                compiled.append(compile(source, "<program>", "exec"))
                compiled.append(None if call is None else compile(call, "<call>", "eval"))
            exec(compiled[0], namespace)
            if compiled[1] is not None:
                result = eval(compiled[1], namespace)
                try:
                    outcome["result"] = repr(result)
                except Exception as exc:
                    outcome["result"] = "<repr failed: " + type(exc).__name__ + ">"
                if expected is not None:
                    outcome["match"] = bool(result == eval(expected, namespace))
        except BaseException as exc:
            outcome["error"] = (type(exc).__name__ + ": " + str(exc))[:2000]
            outcome["traceback"] = _traceback.format_exc()
        finally:
            _sys.stdout = out
        return outcome, list(records), executed(), captured.getvalue()

    outcome, recorded, executed, printed = run_once()
    out.write(printed)
    for kind in ("result", "match", "error"):
        if kind in outcome:
            emit(kind, outcome[kind])
    if "traceback" in outcome:
        _sys.stderr.write(outcome["traceback"])
    # Anchors are buffered (a list append per anchor keeps the overhead small) and written here.
    for site, text in recorded:
        out.write(prefix + "a:" + str(site) + ":" + _json.dumps(text) + "\n")
    if repeats > 1:  # the same program again: any difference marks it nondeterministic
        first = (outcome.get("result"), outcome.get("error"), recorded, executed, printed)
        differs = False
        for _ in range(repeats - 1):
            again, again_records, again_executed, again_printed = run_once()
            if (again.get("result"), again.get("error"), again_records, again_executed, again_printed) != first:
                differs = True
                break
        emit("differs", differs)
    emit("count", [executed, executed - len(recorded)])
    out.flush()
    _sys.exit(1 if "error" in outcome else 0)
'''
"""The trace runner's code: ``_make_anchor`` (the anchor function, also timed by
benchmarks/bench_trace.py) and ``_trace_program(...)``, which runs P' and prints the marker lines.
Compiled once per sandbox batch; each program then costs a call, not a compile of the runner."""
# The runtime binds the name that anchors.py writes into every harness.
assert f"_builtins.{ANCHOR_FUNCTION} = anchor" in TRACE_RUNTIME


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
    has_addresses: bool = field(default=False)  # a value prints a memory address: not reproducible
    deterministic: bool | None = None  # with repeats > 1: every run matched the first; else unknown

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


def trace_call(
    program: InstrumentedProgram,
    call: str | None = None,
    expected: str | None = None,
    nonce: str | None = None,
    repeats: int = 1,
) -> tuple[str, str]:
    """Return ``(snippet, nonce)``: the line that traces ``program`` once :data:`TRACE_RUNTIME` is
    loaded: it runs P', then ``call`` (e.g. ``"f(1, 2)"``), compares the value with the expression
    ``expected`` when given, and with ``repeats`` > 1 runs the whole program again in fresh namespaces
    and reports whether any run differed (``Trace.deterministic``); the trace is the first run's."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    nonce = nonce or new_nonce()
    arguments = (nonce, program.max_anchor_lines, program.hit_cap, program.harness, call, expected, repeats)
    return f"_trace_program{arguments!r}\n", nonce


def build_trace_script(
    program: InstrumentedProgram,
    call: str | None = None,
    expected: str | None = None,
    nonce: str | None = None,
    repeats: int = 1,
) -> tuple[str, str]:
    """Return ``(script, nonce)``: a self-contained script (the runtime and the call of
    :func:`trace_call`) for one sandbox run."""
    snippet, nonce = trace_call(program, call, expected, nonce, repeats)
    return TRACE_RUNTIME + "\n" + snippet, nonce


def uninstrumented(code: str) -> InstrumentedProgram:
    """P itself, wrapped as a program without anchors."""
    return InstrumentedProgram(
        original=code, code=code, harness=code, policy="none", sites=(), max_anchor_lines=0, hit_cap=None, line_map={}
    )


def parse_trace(stdout: str, program: InstrumentedProgram, nonce: str) -> Trace:
    """Split the runner's stdout into anchor steps, the call's outcome and the program's own output.
    Never raises: a line that does not parse counts as program output."""
    prefix = f"{_MARK}{nonce}:"
    pattern = re.compile(re.escape(prefix) + r"(a:\d+|result|match|error|differs|count):([^\n]*)\n?")
    steps: list[Step] = []
    own_output: list[str] = []
    result = error = None
    matches = differs = None
    total, suppressed, complete = 0, 0, False
    position = 0
    for found in pattern.finditer(stdout):
        own_output.append(stdout[position : found.start()])
        position = found.end()
        kind, raw = found.group(1), found.group(2)
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
        elif kind == "count" and isinstance(payload, list) and len(payload) == 2:
            total, suppressed, complete = int(payload[0]), int(payload[1]), True
    own_output.append(stdout[position:])
    if not complete:  # the run was cut short: count what we saw
        total = len(steps)
    values = [step.value for step in steps] + ([result] if result else [])
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
        has_addresses=any(_ADDRESS.search(value) for value in values),
        deterministic=None if differs is None or not complete else not differs,
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


@dataclass
class TracedRun:
    trace: Trace
    status: str  # the sandbox's verdict: ok | error | timeout | memory | output_limit | killed
    stderr: str
    duration_s: float


def run_traces(jobs: list[TraceJob], sandbox, *, timeout_s: float = 5.0, memory_mb: int = 512,
               batch: int = 64, cross_check: bool = False) -> list[TracedRun]:
    """Execute every job in ``sandbox`` (anything with ``run_batch``, see :mod:`sandbox`), in order,
    ``batch`` programs to a sandbox run, each in a process of its own (see
    :mod:`stepcode_core.tracing.forked_batch`); ``batch=1`` gives every program a sandbox run of its own.

    ``cross_check`` runs every job a second time in a fresh interpreter under another
    ``PYTHONHASHSEED``, and ``Trace.deterministic`` says whether both runs agree: this catches
    randomness, clocks and addresses, and also set or dict orders that depend on string hashing,
    which two runs in one interpreter cannot show."""
    if batch <= 1 and not cross_check:
        return _run_alone(jobs, sandbox, timeout_s, memory_mb)
    from stepcode_core.tracing.forked_batch import batch_size, run_forked_passes

    seeds = [None, random.SystemRandom().randint(1, 2**32 - 1)] if cross_check else [None]
    passes = [[trace_call(job.program, job.call, job.expected, repeats=job.repeats) for job in jobs] for _ in seeds]
    size = min(batch, batch_size(len(jobs), sandbox)) if batch > 1 else 1
    outputs = run_forked_passes([([snippet for snippet, _ in snippets], seed) for snippets, seed in zip(passes, seeds)],
                                sandbox, timeout_s=timeout_s, memory_mb=memory_mb, batch=size, prelude=TRACE_RUNTIME)
    runs_by_pass = [
        [TracedRun(parse_trace(result.stdout, job.program, nonce), result.status, result.stderr, result.duration_s)
         for job, (_, nonce), result in zip(jobs, snippets, results)]
        for snippets, results in zip(passes, outputs)
    ]
    runs = runs_by_pass[0]
    if cross_check:
        for run, other in zip(runs, runs_by_pass[1]):
            agree = _observable(run) == _observable(other)
            run.trace.deterministic = agree and run.trace.deterministic is not False
    return runs


def _observable(run: TracedRun) -> tuple:
    trace = run.trace
    return (run.status, trace.result, trace.error, trace.anchor_text(), trace.anchor_lines, trace.program_stdout)


def _run_alone(jobs: list[TraceJob], sandbox, timeout_s: float, memory_mb: int) -> list[TracedRun]:
    """One sandbox run per program."""
    from sandbox import ExecutionRequest

    scripts = [build_trace_script(job.program, job.call, job.expected, repeats=job.repeats) for job in jobs]
    results = sandbox.run_batch(
        [ExecutionRequest(code=script, timeout_s=timeout_s, memory_mb=memory_mb) for script, _ in scripts]
    )
    return [
        TracedRun(parse_trace(result.stdout, job.program, nonce), result.status, result.stderr, result.duration_s)
        for job, (_, nonce), result in zip(jobs, scripts, results)
    ]
