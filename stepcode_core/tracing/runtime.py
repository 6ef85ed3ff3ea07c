"""The trace runtime: the code that runs P' inside the sandbox, once per program.

Not imported by StepCode's own process at run time: :mod:`stepcode_core.tracing.runner` sends this
file's source as the prelude of a sandbox batch, and each item of the batch is one call of
:func:`trace_program`. Stdlib only, and it must stay so: the sandbox has nothing else.

Each anchor records the ``repr`` of its value into a buffer (a list append keeps the overhead
small); when the program ends, the records go to stdout as lines ``\x1e<nonce>:a:<site>:<json
repr>``, then the call's result, error, determinism flag and anchor count. The nonce is fresh per
run, so nothing the program prints on its own can pass for a record.

Three rules keep every recorded step a state the original program P really had:

* **Quiet while recording.** An anchor that fires while a value is being recorded (a ``__repr__``
  with anchors of its own) or while the runtime does its own work (the result's repr, the comparison
  with the expected value) is not a step of the program: it is neither recorded nor counted.
* **Stable reprs.** A default repr carries a memory address (``<__main__.Node object at 0x7f..>``);
  it is recorded without it (``<__main__.Node object>``), in steps, results, errors and printed text
  alike, so that such values can be predicted and two runs compared.
* **P' behaves as P.** With ``original``, P itself runs too (fresh namespace, no anchors); whether its
  result, error and printed output equal P''s is reported, so that a program whose behaviour the
  anchors changed (a ``__repr__`` with side effects, say) is dropped rather than kept.
"""
import builtins as _builtins
import io as _io
import json as _json
import sys as _sys
import traceback as _traceback

# The name every harness calls (stepcode_core.tracing.anchors.ANCHOR_FUNCTION; the runner checks they agree).
ANCHOR_FUNCTION = "__stepcode_anchor__"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def stable(text):
    """``text`` without the memory addresses of default reprs (`` at 0x7f..>`` becomes ``>``).
    String methods, not a regex: the runtime runs in every item's process, which would compile the
    pattern anew each time."""
    if " at 0x" not in text:
        return text
    kept, start = [], 0
    while True:
        found = text.find(" at 0x", start)
        if found < 0:
            break
        end = found + 6
        while end < len(text) and text[end] in _HEX_DIGITS:
            end += 1
        if end > found + 6 and end < len(text) and text[end] == ">":
            kept.append(text[start:found])
        else:
            kept.append(text[start:end])
        start = end
    kept.append(text[start:])
    return "".join(kept)


def make_anchor(record_limit, hit_cap, quiet):
    # __stepcode_anchor__ for one run: records (site, stable repr(value)) of up to record_limit anchors
    # and at most hit_cap hits a site, and counts every anchor executed; quiet[0] silences it.
    records = []
    record = records.append
    hits = {}
    total = 0

    def anchor(site, value):
        nonlocal total
        if quiet[0]:  # inside a repr, or the runtime's own work: not a step of the program
            return
        total += 1
        if total > record_limit:
            return
        if hit_cap is not None:
            seen = hits[site] = hits.get(site, 0) + 1
            if seen > hit_cap:
                return
        quiet[0] = True
        try:
            record((site, stable(repr(value))))
        except Exception as exc:  # P' must behave as P: a failing repr is reported, never raised
            record((site, "<repr failed: " + type(exc).__name__ + ">"))
        finally:
            quiet[0] = False

    return anchor, records, lambda: total


class Capture(_io.StringIO):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def write(self, text):
        if self.tell() > 1 << 20:  # a flood goes straight out, so the sandbox's output cap ends the run
            return self.out.write(text)
        return super().write(text)


def trace_program(nonce, record_limit, hit_cap, program, call, expected, repeats, original=None):
    """Run ``program`` (source text, a code object, or the SyntaxError its compilation raised), then
    the expression ``call``, compare its value with ``expected``, and print the records; with
    ``repeats`` > 1 run it all again in fresh namespaces and print whether any run differed (and
    what); with ``original`` (the source of P) run P too and print whether it behaved the same."""
    out = _sys.stdout
    prefix = "\x1e" + nonce + ":"
    quiet = [False]
    compiled = {}  # compiled inside the first run's try: a compile error is the program's error

    def emit(kind, payload):
        out.write(prefix + kind + ":" + _json.dumps(payload) + "\n")

    def run_once(key, source, anchored=True):
        # One execution in a fresh namespace: (outcome, anchor records, anchors executed, printed text).
        anchor, records, executed = make_anchor(record_limit if anchored else 0, hit_cap, quiet)
        setattr(_builtins, ANCHOR_FUNCTION, anchor)
        namespace = {"__name__": "__main__", "__builtins__": _builtins}
        outcome = {}
        _sys.stdout = captured = Capture(out)
        try:
            if key not in compiled:
                if isinstance(source, BaseException):
                    raise source
                compiled[key] = compile(source, "<program>", "exec") if isinstance(source, str) else source
                if "call" not in compiled:
                    compiled["call"] = None if call is None else compile(call, "<call>", "eval")
            exec(compiled[key], namespace)
            if compiled["call"] is not None:
                result = eval(compiled["call"], namespace)
                quiet[0] = True  # the runtime's own work: the program's anchors stay silent here
                try:
                    try:
                        outcome["result"] = stable(repr(result))
                    except Exception as exc:
                        outcome["result"] = "<repr failed: " + type(exc).__name__ + ">"
                    if expected is not None:
                        outcome["match"] = bool(result == eval(expected, namespace))
                finally:
                    quiet[0] = False
        except BaseException as exc:
            quiet[0] = False
            try:
                outcome["error"] = stable(type(exc).__name__ + ": " + str(exc))[:2000]
            except BaseException:  # an exception whose str fails
                outcome["error"] = type(exc).__name__
            outcome["traceback"] = _traceback.format_exc()
        finally:
            _sys.stdout = out
        return outcome, list(records), executed(), stable(captured.getvalue())

    def observable(run):
        outcome, records, executed, printed = run
        return {"result": outcome.get("result"), "error": outcome.get("error"), "steps": records,
                "anchors": executed, "output": printed}

    first = run_once("program", program)
    outcome, recorded, executed, printed = first
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
        seen = observable(first)
        differs = None
        for _ in range(repeats - 1):
            again = observable(run_once("program", program))
            differs = next((part for part in seen if again[part] != seen[part]), None)
            if differs:
                emit("differs_detail", [differs, _json.dumps(seen[differs])[:300], _json.dumps(again[differs])[:300]])
                break
        emit("differs", differs is not None)
    if original is not None:  # P itself: P' must print, return and raise what P does
        mine, theirs = observable(first), observable(run_once("original", original, anchored=False))
        differs = next((part for part in ("result", "error", "output") if mine[part] != theirs[part]), None)
        emit("original", [differs, _json.dumps(mine[differs])[:300], _json.dumps(theirs[differs])[:300]]
             if differs else None)
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
                  params["expected"], params["repeats"], params.get("original"))
