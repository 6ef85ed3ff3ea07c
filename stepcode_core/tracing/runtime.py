"""The trace runtime: the code that runs P' inside the sandbox, once per program.

Not imported by StepCode's own process at run time: :mod:`stepcode_core.tracing.runner` sends this
file's source as the prelude of a sandbox batch, and each item of the batch is one call of
:func:`trace_program`. Stdlib only, and it must stay so: the sandbox has nothing else.

Each anchor records the ``repr`` of its value into a buffer (a list append keeps the overhead
small); when the program ends, the records go to stdout as lines ``\x1e<nonce>:a:<site>:<json
repr>``, then the call's result, error, determinism flag and anchor count. The nonce is fresh per
run, so nothing the program prints on its own can pass for a record.
"""
import builtins as _builtins
import io as _io
import json as _json
import sys as _sys
import traceback as _traceback

# The name every harness calls (stepcode_core.tracing.anchors.ANCHOR_FUNCTION; the runner checks they agree).
ANCHOR_FUNCTION = "__stepcode_anchor__"


def make_anchor(record_limit, hit_cap):
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


class Capture(_io.StringIO):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def write(self, text):
        if self.tell() > 1 << 20:  # a flood goes straight out, so the sandbox's output cap ends the run
            return self.out.write(text)
        return super().write(text)


def trace_program(nonce, record_limit, hit_cap, program, call, expected, repeats):
    """Run ``program`` (source text, a code object, or the SyntaxError its compilation raised), then
    the expression ``call``, compare its value with ``expected``, and print the records; with
    ``repeats`` > 1 run it all again in fresh namespaces and print whether any run differed."""
    out = _sys.stdout
    prefix = "\x1e" + nonce + ":"
    compiled = []  # compiled inside the first run's try: a compile error is the program's error

    def emit(kind, payload):
        out.write(prefix + kind + ":" + _json.dumps(payload) + "\n")

    def run_once():
        # One execution in a fresh namespace: (outcome, anchor records, anchors executed, printed text).
        anchor, records, executed = make_anchor(record_limit, hit_cap)
        setattr(_builtins, ANCHOR_FUNCTION, anchor)
        namespace = {"__name__": "__main__", "__builtins__": _builtins}
        outcome = {}
        _sys.stdout = captured = Capture(out)
        try:
            if not compiled:
                if isinstance(program, BaseException):
                    raise program
                compiled.append(compile(program, "<program>", "exec") if isinstance(program, str) else program)
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


def __run_item__(program):
    """The sandbox worker's item hook: each item of a trace batch is a harness, compiled by the
    worker before the fork (``program``: a code object, or its SyntaxError); its parameters arrive on
    stdin as one JSON object. The program itself then reads an empty stdin, as it would alone."""
    params = _json.loads(_sys.stdin.read())
    _sys.stdin = _io.StringIO("")
    trace_program(params["nonce"], params["record_limit"], params["hit_cap"], program, params["call"],
                  params["expected"], params["repeats"])
