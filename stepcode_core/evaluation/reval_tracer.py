"""In-sandbox half of the REval scorer: traces one (program, input) of DREval the way REval's
``Sandbox`` does, derives the ground truth of every query, and checks the answers that need Python
evaluation (State answers are ``eval``-ed, Output completions are executed).

Not imported by StepCode's own process at run time: :mod:`stepcode_core.evaluation.reval` sends this
file's source as the prelude of a sandbox batch whose items each call :func:`main` on one
(program, input); stdin is one JSON object (see ``stepcode_core.evaluation.reval._payload``), stdout
one JSON line. The answers of one (program, input) are checked one after another in its item's
process, each under a time limit, as REval's own harness checks them in its process; an answer that
ends that process or outlasts the item's limit makes the scorer check that pair again, one answer per
item (see :func:`stepcode_core.evaluation.reval.run_groups`). Stdlib only, plus what the programs
themselves import.

Hand-written because REval ships no reusable library; the semantics follow SEMANTICS.md beside the
data: line events of frames compiled from ``code`` (filename ``<internals>``), consecutive events on one
line merged with the last snapshot kept, snapshots taken before the line runs and deep-copied without
modules, functions, builtins, iterators and generators; ClassEval ``setUp`` runs before tracing.
Two rules that SEMANTICS.md implies and REval's own ground truth confirms: a ``return`` from another line
than the last entry's (a function ending without a ``return`` statement) is an entry of its own with no
variables, and an execution that is the run's last entry has -1 among its Path successors. Under CPython
3.10 this reproduces REval's ground truth on every question; 3.11 changes 2 Path answers (a line event on
a ``def`` line, shown in ``tests/core/test_reval.py``).
"""

import ast
import copy
import io
import itertools
import json
import os
import signal
import sys
import types
from collections.abc import Iterator

FILENAME = "<internals>"
ASSERT_MARKERS = ("assert True", "assert False", "assertTrue(True)", "assertFalse(False)")


# ---------------------------------------------------------------- running the program under trace

_DROPPED = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, Iterator,
            types.GeneratorType)


def _keep(value):
    return not isinstance(value, _DROPPED)


def _snapshot(frame):
    out = {}
    for name, value in frame.f_locals.items():
        if not _keep(value):
            continue
        try:
            out[name] = copy.deepcopy(value)
        except Exception:
            out[name] = value  # not copyable (locks, sockets): keep the live object
    return out


class Tracer:
    def __init__(self):
        self.lines = []  # 1-based line numbers, consecutive duplicates merged
        self.states = []  # locals snapshot before the line (the last event of a merged run)

    def global_trace(self, frame, event, arg):
        if frame.f_code.co_filename != FILENAME:
            return None
        return self.local_trace

    def local_trace(self, frame, event, arg):
        same_line = bool(self.lines) and self.lines[-1] == frame.f_lineno
        if event == "line":
            snap = _snapshot(frame)
            if same_line:
                self.states[-1] = snap
            else:
                self.lines.append(frame.f_lineno)
                self.states.append(snap)
        elif event == "return" and not same_line:
            # REval's trace holds returns too: a return from a line other than the last entry's
            # (an implicit return at a function's last line) is an entry without variables
            self.lines.append(frame.f_lineno)
            self.states.append({})
        return self.local_trace


def _as_method(snippet, name):
    """A ClassEval test snippet (``assertX(...)`` unqualified) as a method source of the test class:
    ``assert`` becomes ``self.assert`` and every line is indented by one tab, except lines inside
    triple-quoted blocks (REval's transformation)."""
    lines, inside = [], False
    for line in snippet.replace("assert", "self.assert").split("\n"):
        lines.append(line if inside else "\t" + line)
        if (line.count("'''") + line.count('"""')) % 2 == 1:
            inside = not inside
    return f"def {name}(self):\n" + "\n".join(lines) + "\n\tpass\n"


def _test_class(namespace, test_source, snippet):
    """The unittest class whose setUp serves ``snippet``: the class with a test method whose body is
    the snippet; else the first class with a setUp; else the first TestCase class."""
    import unittest

    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, unittest.TestCase)
               and v is not unittest.TestCase]
    want = [ln.strip() for ln in snippet.strip().split("\n") if ln.strip()]
    try:
        tree = ast.parse(test_source)
    except SyntaxError:
        tree = None
    if tree is not None:
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test") and item.body:
                    seg = ast.get_source_segment(test_source, item) or ""
                    body = "\n".join(seg.split("\n")[1:])
                    got = [ln.strip().replace("self.assert", "assert") for ln in body.split("\n") if ln.strip()]
                    if got == want:
                        match = [c for c in classes if c.__name__ == node.name]
                        if match:
                            return match[0]
    with_setup = [c for c in classes if "setUp" in c.__dict__]
    return (with_setup or classes or [unittest.TestCase])[0]


def _fresh_namespace(task):
    namespace = {"__name__": "__reval__", "__builtins__": __builtins__}
    exec(compile(task["code"], FILENAME, "exec"), namespace)
    if task.get("test"):
        exec(compile(task["test"], "<test>", "exec"), namespace)
    return namespace


def _class_instance(task, namespace, snippet):
    cls = _test_class(namespace, task["test"] or "", snippet)
    inst = cls()
    if "setUp" in dir(cls):
        inst.setUp()  # before tracing starts: REval does not trace setUp
    return inst


def run_traced(task):
    """Run the input under trace; returns (tracer, return value or None, error text or None)."""
    tracer = Tracer()
    namespace = _fresh_namespace(task)
    result, error = None, None
    if task["test"] is None:
        fn = namespace[task["entry_point"]]
        args = eval(task["input"], namespace)
        sys.settrace(tracer.global_trace)
        try:
            result = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - REval records the trace either way
            error = f"{type(exc).__name__}: {exc}"
        finally:
            sys.settrace(None)
    else:
        scope = dict(namespace)
        exec(compile(_as_method(task["input"], "_reval_input"), "<test-input>", "exec"), scope)
        inst = _class_instance(task, namespace, task["input"])
        sys.settrace(tracer.global_trace)
        try:
            scope["_reval_input"](inst)
        except BaseException as exc:  # noqa: BLE001
            error = f"{type(exc).__name__}: {exc}"
        finally:
            sys.settrace(None)
    return tracer, result, error


# ---------------------------------------------------------------- ground truth per query

def _values(node, snaps):
    """REval's reading of ``var``: names per snapshot; attributes and subscripts over the CROSS
    PRODUCT of all values found; tuples as the cross product of their elements. Failures skipped."""
    if isinstance(node, ast.Name):
        return [s[node.id] for s in snaps if node.id in s]
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, ast.Attribute):
        out = []
        for value in _values(node.value, snaps):
            try:
                out.append(getattr(value, node.attr))
            except Exception:
                pass
        return out
    if isinstance(node, ast.Subscript):
        containers, indexes = _values(node.value, snaps), _values(node.slice, snaps)
        out = []
        for c in containers:
            for i in indexes:
                try:
                    out.append(c[i])
                except Exception:
                    pass
        return out
    if isinstance(node, ast.Tuple):
        return [tuple(p) for p in itertools.product(*[_values(e, snaps) for e in node.elts])]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return [-v for v in _values(node.operand, snaps)]
    return []


def ground_truth(tracer, lineno, var):
    lines, states = tracer.lines, tracer.states
    hits = [k for k, line in enumerate(lines) if line == lineno]
    nexts = sorted({lines[k + 1] if k + 1 < len(lines) else -1 for k in hits})  # -1: the run ends there
    snaps = [states[k + 1] if k + 1 < len(lines) else states[k] for k in hits]
    try:
        node = ast.parse(var.strip(), mode="eval").body
    except SyntaxError:
        node = None
    values = _values(node, snaps) if (hits and node is not None) else []
    return {"covered": bool(hits), "path": nexts or [-1], "values": values}


def _type_text(tp):
    return tp.__name__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"


def _safe_repr(value, limit=2000):
    try:
        text = repr(value)
    except Exception as exc:
        text = f"<repr failed: {type(exc).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


# ---------------------------------------------------------------- State answers (State._postprocess)

NIL = "Nil"


def _eval_namespace():
    numpy = sys.modules.get("numpy")  # only where the program loaded it: importing it costs 0.1 s
    return {"np": numpy, "numpy": numpy} if numpy is not None else {}


def _locate(path):
    """``pydoc.locate`` (REval's type lookup) without importing pydoc, which costs 45 ms per run: the
    longest importable module prefix, then attributes; builtins when no prefix imports."""
    import builtins
    import importlib

    parts = [part for part in path.split(".") if part]
    module, n = None, 0
    while n < len(parts):
        name = ".".join(parts[: n + 1])
        try:
            module, n = importlib.import_module(name), n + 1
        except ModuleNotFoundError as exc:
            if exc.name != name and not name.startswith(f"{exc.name}."):
                raise  # the module exists but fails to import: pydoc raises too
            break
    obj = module if module is not None else builtins
    for part in parts[n:]:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return None
    return obj


def parse_state(text):
    """A State answer (text inside [ANSWER]) as ("nil",) | ("value", value, type) | ("error",)."""
    text = text.strip()
    if text == NIL:
        return ("nil",)
    if ";" not in text:
        return ("error",)
    value_text, type_text = text.rsplit(";", 1)
    value_text, type_text = value_text.strip(), type_text.strip().lower()
    if type_text.startswith("<class '") and type_text.endswith("'>"):
        type_text = type_text[len("<class '"):-2]
    if "[" in type_text:
        type_text = type_text.split("[", 1)[0]
    type_text = {"string": "str", "integer": "int"}.get(type_text, type_text)
    if "," in type_text or "tuple" in type_text:
        type_text = "tuple"
    try:
        if type_text == "str":
            try:
                return ("value", eval(value_text, _eval_namespace()), str)
            except Exception:
                return ("value", value_text, str)
        if type_text in ("datetime", "datetime.datetime"):
            import datetime

            from dateutil import parser as date_parser
            return ("value", date_parser.parse(value_text), datetime.datetime)
        if type_text in ("numpy.ndarray", "np.ndarray", "ndarray"):
            import numpy
            return ("value", numpy.array(eval(value_text, _eval_namespace())), numpy.ndarray)
        if type_text in ("none", "nonetype"):
            return ("value", None, type(None))
        tp = _locate(type_text)
        if tp is None:
            return ("error",)
        if getattr(tp, "__module__", None) == "builtins":
            return ("value", eval(value_text, _eval_namespace()), tp)
        try:
            return ("value", tp(eval(value_text, _eval_namespace())), tp)
        except Exception:
            return ("value", tp(value_text), tp)
    except Exception:
        return ("error",)


def _equal(answer, value):
    numpy = sys.modules.get("numpy")
    try:
        if numpy is not None and (isinstance(answer, numpy.ndarray) or isinstance(value, numpy.ndarray)):
            return bool(numpy.allclose(answer, value))
    except Exception:
        return False
    try:
        return bool(answer == value)
    except Exception:
        return False


def state_correct(parsed, values):
    if parsed[0] == "nil":
        return not values
    if parsed[0] != "value" or not values:
        return False
    _, answer, tp = parsed
    if not any(type(v) == tp for v in values) or type(answer) != tp:
        return False
    if tp is float:
        return any(isinstance(v, (int, float)) and abs(answer - v) < 1e-6 for v in values)
    return any(_equal(answer, v) for v in values)


def accepted_answer(values):
    """An answer string REval's parser accepts for these values (None when none is found)."""
    if not values:
        return NIL
    seen = set()
    for value in values:
        key = (type(value), _safe_repr(value))
        if key in seen:
            continue
        seen.add(key)
        if len(seen) > 20:
            break
        tp = type(value)
        type_texts = ["None"] if value is None else [_type_text(tp)]
        value_texts = [_safe_repr(value, 10**6), str(value)]
        if isinstance(value, type):
            value_texts.insert(0, _type_text(value))  # the class itself: "int; type"
        if hasattr(value, "tolist"):
            value_texts.insert(0, repr(value.tolist()))
        try:
            value_texts.append(repr(list(value)))
        except Exception:
            pass
        for type_text in type_texts:
            for value_text in value_texts:
                candidate = f"{value_text}; {type_text}"
                if state_correct(parse_state(candidate), values):
                    return candidate
    return None


# ---------------------------------------------------------------- Output completions

def output_program(task, completion):
    """Completion text as REval runs it; None when REval fails it without running."""
    question = task["question"]
    if any(marker in completion for marker in ASSERT_MARKERS):
        return None
    if completion.count("assert") < question.count("assert"):
        return None
    q_lines, c_lines = question.split("\n"), completion.split("\n")
    if len(c_lines) < len(q_lines):
        c_lines = q_lines[: len(q_lines) - len(c_lines)] + c_lines
    return "\n".join(c_lines)


def run_output(task, completion):
    program = output_program(task, completion)
    if program is None:
        return False
    namespace = _fresh_namespace(task)
    if task["test"] is None:
        # REval: exec(completion) where locals() holds only the function under its name
        exec(program, {"__builtins__": __builtins__, task["entry_point"]: namespace[task["entry_point"]]})
        return True
    scope = dict(namespace)
    exec(compile(_as_method(program, "_reval_output"), "<completion>", "exec"), scope)
    inst = _class_instance(task, namespace, task["input"])
    scope["_reval_output"](inst)
    return True


# ---------------------------------------------------------------- a time limit for each answer

class AnswerTimeout(BaseException):
    """Raised by the timer in an answer that runs too long (a BaseException, so that the answer's own
    ``except Exception`` does not swallow it)."""


def limited(fn, timeout):
    """fn() -> bool under a wall-clock limit; any failure, the limit included, is False."""
    def on_alarm(signum, frame):
        raise AnswerTimeout()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return bool(fn())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except BaseException:  # noqa: BLE001 - a wrong, hostile or endless answer scores False
        return False
    finally:
        signal.signal(signal.SIGALRM, previous)


def _numpy_1_aliases():
    """REval ran numpy 1.x, where DREval/122 works: ``np.mat`` (removed in 2.0; it was ``np.asmatrix``) and
    ``float()`` of a 1x1 matrix."""
    try:
        import numpy
    except ImportError:
        return
    if not hasattr(numpy, "mat"):
        numpy.mat = numpy.asmatrix
    try:
        float(numpy.asmatrix([[1.0]]))
    except TypeError:  # numpy >= 2.? refuses float() of a 1x1 matrix, which DREval/122 does

        def _matrix_float(self):
            if self.size != 1:
                raise TypeError("only size-1 arrays can be converted to Python scalars")
            return float(self.item())

        numpy.matrix.__float__ = _matrix_float


def main():
    task = json.loads(sys.stdin.read())
    if "numpy" in task["code"]:
        _numpy_1_aliases()
    os.environ.setdefault("HOME", "/tmp")  # the run has an empty environment; gensim needs a home
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the program's own prints must not mix with our one JSON line
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
    report = {}
    try:
        tracer, result, error = run_traced(task)
    except BaseException as exc:  # the program cannot even be loaded (e.g. a missing module)
        report = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    else:
        cap = task.get("values_cap", 20)
        queries, values_of = [], []
        for q in task["queries"]:
            truth = ground_truth(tracer, q["lineno"], q["var"])
            values = truth["values"]
            values_of.append(values)
            distinct = []
            for v in values:
                item = [_safe_repr(v), _type_text(type(v))]
                if item not in distinct:
                    distinct.append(item)
                if len(distinct) >= cap:
                    break
            queries.append({"covered": truth["covered"], "path": truth["path"], "n_values": len(values),
                            "values": distinct,
                            "accepted": accepted_answer(values) if task.get("want_accepted") else None})
        timeout = task.get("answer_timeout", 5.0)
        if any("datetime" in a[1] for a in task.get("state_answers", [])):
            try:
                import dateutil.parser  # noqa: F401
            except ImportError:
                pass
        state_verdicts = [limited(lambda a=a: state_correct(parse_state(a[1]), values_of[a[0]]), timeout)
                          for a in task.get("state_answers", [])]
        output_verdicts = [limited(lambda c=c: run_output(task, c), timeout) for c in task.get("completions", [])]
        report = {"ok": True, "error": error, "lines": tracer.lines if task.get("want_lines") else None,
                  "value_repr": _safe_repr(result, 10**6) if task["test"] is None else None,
                  "queries": queries, "state": state_verdicts, "output": output_verdicts}
    os.write(out_fd, (json.dumps(report) + "\n").encode())

