"""Programs that stress the anchor engine: each is (name, code, call). P and P' must agree on the
call's value, on any exception, and on everything the program prints itself."""

TRICKY_PROGRAMS: list[tuple[str, str, str | None]] = [
    (
        "generator",
        """
def gen(n):
    total = 0
    for i in range(n):
        received = yield i * i
        total += i
    return total

def f(n):
    g = gen(n)
    out = list(g)
    squares = [x for x in out]
    return squares, sum(squares)
""",
        "f(5)",
    ),
    (
        "generator_return_value",
        """
def gen():
    x = yield 1
    y = yield 2
    return (x, y)

def f():
    g = gen()
    first = next(g)
    second = g.send('a')
    try:
        g.send('b')
    except StopIteration as stop:
        result = stop.value
    return first, second, result
""",
        "f()",
    ),
    (
        "comprehensions",
        """
def f(words):
    lengths = {w: len(w) for w in words}
    evens = [n for n in lengths.values() if n % 2 == 0]
    pairs = {(a, b) for a in evens for b in evens if a < b}
    total = sum(n for n in evens)
    return sorted(pairs), total, lengths
""",
        "f(['ab', 'abcd', 'xyz', 'hello!'])",
    ),
    (
        "walrus",
        """
def f(values):
    if (n := len(values)) > 3:
        label = 'long'
    else:
        label = 'short'
    found = [y for v in values if (y := v * 2) > 4]
    last = y
    while (chunk := values[:2]):
        values = values[2:]
    return n, label, found, last, (z := 10) + z
""",
        "f([1, 2, 3, 4, 5])",
    ),
    (
        "try_finally",
        """
log = []

def inner(x):
    try:
        result = 10 // x
        return result
    except ZeroDivisionError:
        result = -1
        return result
    finally:
        log.append(('finally', x))

def override():
    try:
        return 'try'
    finally:
        return 'finally'

def f():
    a = inner(2)
    b = inner(0)
    c = override()
    return a, b, c, log
""",
        "f()",
    ),
    (
        "early_return_in_loop",
        """
def f(nums, target):
    seen = {}
    for i, n in enumerate(nums):
        if target - n in seen:
            return (seen[target - n], i)
        seen[n] = i
    while True:
        target -= 1
        if target < 0:
            return None
""",
        "f([3, 5, 9, 11], 14)",
    ),
    (
        "loop_that_never_runs",
        """
def f(items):
    for item in items:
        last = item
        count = 1
    total = 0
    for item in items:
        total += item
    else:
        done = True
    return total
""",
        "f([])",
    ),
    (
        "recursion",
        """
def fact(n):
    if n <= 1:
        return 1
    smaller = fact(n - 1)
    return n * smaller

def f(n):
    value = fact(n)
    return value
""",
        "f(12)",
    ),
    (
        "methods_and_classes",
        """
class Counter:
    start = 100
    def __init__(self, step):
        self.step = step
        self.items = []
    def add(self, x):
        scaled = x * self.step
        self.items.append(scaled)
        return scaled
    @property
    def total(self):
        total = sum(self.items)
        return total
    def __repr__(self):
        return f'Counter({self.items!r})'

def f(xs):
    c = Counter(3)
    added = [c.add(x) for x in xs]
    t = c.total
    return added, t, c
""",
        "f([1, 2, 3])",
    ),
    (
        "global_and_nonlocal",
        """
counter = 0

def bump():
    global counter
    counter += 1
    return counter

def make_acc():
    total = 0
    def acc(x):
        nonlocal total
        total += x
        return total
    return acc

def f():
    bump(); bump()
    acc = make_acc()
    first = acc(5)
    second = acc(7)
    return counter, first, second
""",
        "f()",
    ),
    (
        "program_that_prints",
        """
def f(name):
    print('x: 5')
    print('return:', name)
    greeting = 'hello ' + name
    print(greeting, end='')
    print('\\x1eforged:a:0:"fake"')
    return greeting.upper()
""",
        "f('ada')",
    ),
    (
        "exceptions",
        """
class ParseError(ValueError):
    pass

def parse(text):
    value = int(text)
    return value

def f(texts):
    parsed = []
    for t in texts:
        try:
            parsed.append(parse(t))
        except ValueError as err:
            message = str(err)
    if not parsed:
        raise ParseError('nothing parsed: ' + message)
    return parsed
""",
        "f(['x', 'y'])",
    ),
    (
        "uncaught_exception",
        """
def f(d):
    value = d['missing']
    return value
""",
        "f({'present': 1})",
    ),
    (
        "argument_mutation",
        """
def f(xs, d):
    xs.append(4)
    xs[0] = 'first'
    d['new'] = len(xs)
    del d['old']
    ys = xs
    ys += [5]
    xs.sort(key=str)
    return xs, d, ys is xs
""",
        "f([3, 1, 2], {'old': 0})",
    ),
    (
        "unicode",
        """
def f(text):
    caf\u00e9 = text.upper()
    r\u00e9sum\u00e9 = caf\u00e9[::-1] + '\u2603\U0001F600'
    counts = {ch: r\u00e9sum\u00e9.count(ch) for ch in set(r\u00e9sum\u00e9)}
    return r\u00e9sum\u00e9, len(counts), '\u00df'.upper()
""",
        "f('na\u00efve \u65e5\u672c')",
    ),
    (
        "evaluated_once",
        """
calls = []

def tick(tag):
    calls.append(tag)
    return len(calls)

def f():
    a = tick('a')
    b, c = tick('b'), tick('c')
    d = {}
    d[tick('key')] = tick('value')
    a += tick('aug')
    return tick('ret') * 10 + a, calls
""",
        "f()",
    ),
    (
        "tuple_unpacking_and_annotations",
        """
def f(pairs):
    first, *rest = pairs
    (a, b), c = first, len(rest)
    total: int = a + b + c
    note: str
    x = y = total * 2
    _ = 'ignored'
    return first, rest, total, x, y
""",
        "f([(1, 2), (3, 4), (5, 6)])",
    ),
    (
        "locals_and_module_script",
        """
import math
values = [math.sqrt(v) for v in (4, 9, 16)]
scale = 2
scaled = [v * scale for v in values]
if __name__ == '__main__':
    print('script ran', scaled)

def f():
    return scaled
""",
        "f()",
    ),
    (
        "bare_return_and_lambda",
        """
def side(out):
    out.append(1)
    return

def f():
    out = []
    side(out)
    key = lambda s: s[::-1]
    it = map(str, out)
    return sorted(['ab', 'ba', 'ca'], key=key), list(it)
""",
        "f()",
    ),
    (
        "with_statement",
        """
import contextlib

def f(n):
    with contextlib.suppress(ZeroDivisionError):
        ratio = 1 / n
    with open('scratch.txt', 'w') as handle:
        written = handle.write('abc')
    with open('scratch.txt') as handle:
        content = handle.read()
    return content, written
""",
        "f(0)",
    ),
]


# ---------------------------------------------------------------------------------------------------
import pytest

from stepcode_core.tracing.anchors import instrument
from stepcode_core.tracing.runner import TraceJob, run_traces, uninstrumented


def _run_both(sandbox, code: str, call: str | None, policy: str):
    program = instrument(code, policy=policy)
    original, instrumented = run_traces(
        [TraceJob(uninstrumented(code), call), TraceJob(program, call)], sandbox, timeout_s=10
    )
    return program, original, instrumented


@pytest.mark.parametrize("policy", ["paper", "dense"])
@pytest.mark.parametrize("name,code,call", TRICKY_PROGRAMS, ids=[case[0] for case in TRICKY_PROGRAMS])
def test_instrumented_program_behaves_like_the_original(local_sandbox, name, code, call, policy):
    program, original, instrumented = _run_both(local_sandbox, code, call, policy)
    assert original.status == instrumented.status
    assert original.trace.complete and instrumented.trace.complete
    assert instrumented.trace.result == original.trace.result
    assert instrumented.trace.error == original.trace.error
    assert instrumented.trace.program_stdout == original.trace.program_stdout
    assert original.trace.steps == []
    assert program.sites, f"{name}: no anchor inserted"


def test_every_tricky_program_reports_some_state(local_sandbox):
    jobs = [TraceJob(instrument(code), call) for _, code, call in TRICKY_PROGRAMS]
    runs = run_traces(jobs, local_sandbox, timeout_s=10)
    silent = [name for (name, _, _), run in zip(TRICKY_PROGRAMS, runs) if not run.trace.steps]
    assert silent == ["uncaught_exception"]  # it raises before its first anchor


def test_expected_outcomes_of_selected_programs(local_sandbox):
    cases = {name: (code, call) for name, code, call in TRICKY_PROGRAMS}
    jobs = [TraceJob(instrument(cases[name][0]), cases[name][1])
            for name in ("exceptions", "uncaught_exception", "program_that_prints", "evaluated_once")]
    exceptions, uncaught, prints, once = run_traces(jobs, local_sandbox, timeout_s=10)
    assert exceptions.trace.error == "ParseError: nothing parsed: invalid literal for int() with base 10: 'y'"
    assert uncaught.trace.error == "KeyError: 'missing'"
    assert [step.text() for step in uncaught.trace.steps] == []
    # The program's own lines, forged marker included, are output, not anchors.
    assert prints.trace.program_stdout.startswith("x: 5\nreturn: ada\nhello ada")
    assert "forged" in prints.trace.program_stdout
    assert [step.name for step in prints.trace.steps] == ["greeting", "return"]
    assert prints.trace.steps[0].value == "'hello ada'"
    # Each call to tick() happened exactly once, in P's order.
    assert once.trace.result == "(77, ['a', 'b', 'c', 'value', 'key', 'aug', 'ret'])"  # value before key, as in Python


def test_steps_carry_values_and_original_lines(local_sandbox):
    code = "def f(xs):\n    total = sum(xs)\n    xs.append(total)\n    return len(xs) * 2\n"
    program = instrument(code)
    (run,) = run_traces([TraceJob(program, "f([1, 2])", "6")], local_sandbox)
    assert [(s.name, s.value, s.line) for s in run.trace.steps] == [
        ("total", "3", 2),
        ("xs", "[1, 2, 3]", 3),
        ("return", "6", 4),
    ]
    assert run.trace.matches_expected is True
    assert run.trace.anchor_text() == "total: 3\nxs: [1, 2, 3]\nreturn: 6"
    for site in program.sites:
        assert program.original_line(site.instrumented_line) == site.line


def test_display_code_prints_the_same_anchor_lines(local_sandbox):
    """P' as a model reads it (plain prints) prints exactly the lines the harness records."""
    name, code, call = next(case for case in TRICKY_PROGRAMS if case[0] == "argument_mutation")
    program = instrument(code)
    shown = uninstrumented(program.code)
    shown_run, traced_run = run_traces([TraceJob(shown, call), TraceJob(program, call)], local_sandbox)
    assert shown_run.trace.program_stdout.rstrip("\n") == traced_run.trace.anchor_text()
    assert shown_run.trace.result == traced_run.trace.result


def test_paper_policy_keeps_anchors_out_of_loops_but_reports_after_them(local_sandbox):
    code = (
        "def f(s):\n"
        "    count = 0\n"
        "    out = []\n"
        "    for ch in s:\n"
        "        if ch.isdigit():\n"
        "            count += 1\n"
        "            out.append(ch)\n"
        "            last = ch\n"
        "    return count\n"
    )
    paper = instrument(code, policy="paper")
    assert [(s.name, s.line) for s in paper.sites] == [("count", 2), ("out", 3), ("count", 4), ("out", 4), ("return", 9)]
    dense = instrument(code, policy="dense")
    assert {"ch", "last"} <= set(dense.site_names)
    paper_run, dense_run = run_traces([TraceJob(paper, "f('a1b22')"), TraceJob(dense, "f('a1b22')")], local_sandbox)
    assert paper_run.trace.anchor_text() == "count: 0\nout: []\ncount: 3\nout: ['1', '2', '2']\nreturn: 3"
    assert dense_run.trace.anchor_lines > paper_run.trace.anchor_lines


def test_over_cap_is_marked_not_silently_truncated(local_sandbox):
    code = "def fib(n):\n    if n < 2:\n        return n\n    value = fib(n - 1) + fib(n - 2)\n    return value\n"
    program = instrument(code)
    (run,) = run_traces([TraceJob(program, "fib(10)")], local_sandbox)
    assert run.trace.result == "55"
    assert run.trace.over_cap
    assert len(run.trace.steps) == program.max_anchor_lines == 10
    assert run.trace.anchor_lines == 177 + 88  # 177 calls return once each; 88 of them assign value
    assert run.trace.suppressed == run.trace.anchor_lines - 10


def test_dense_policy_hit_cap(local_sandbox):
    code = "def f(n):\n    acc = 0\n    for i in range(n):\n        acc += i\n    return acc\n"
    program = instrument(code, policy="dense", hit_cap=3)
    (run,) = run_traces([TraceJob(program, "f(50)")], local_sandbox)
    names = [s.name for s in run.trace.steps]
    assert names.count("i") == 3 and names.count("acc") == 4  # initial value + 3 hits in the loop
    assert run.trace.suppressed == 2 * 47
    assert run.trace.result == "1225"


def test_a_clean_run_writes_nothing_to_stderr(local_sandbox):
    (run,) = run_traces([TraceJob(instrument("def f(x):\n    y = x + 1\n    return y\n"), "f(1)", "2")], local_sandbox)
    assert run.status == "ok" and run.stderr == ""
    assert run.trace.matches_expected is True


def test_repeated_execution_flags_nondeterministic_programs(local_sandbox):
    stable = "def f(xs):\n    ys = sorted(xs)\n    return ys\n"
    randomized = "import random\n\ndef f(n):\n    k = random.random()\n    return k < 2\n"
    leaking = "seen = []\n\ndef f(x):\n    seen.append(x)\n    size = len(seen)\n    return size\n"
    timed = "import time\n\ndef f():\n    stamp = time.perf_counter_ns()\n    return stamp > 0\n"
    jobs = [TraceJob(instrument(stable), "f([3, 1])", repeats=2),
            TraceJob(instrument(randomized), "f(1)", repeats=2),
            TraceJob(instrument(leaking), "f(1)", repeats=2),
            TraceJob(instrument(timed), "f()", repeats=2),
            TraceJob(instrument(stable), "f([3, 1])")]
    stable_run, random_run, leaking_run, timed_run, once = run_traces(jobs, local_sandbox)
    assert stable_run.trace.deterministic is True and stable_run.trace.result == "[1, 3]"
    assert random_run.trace.deterministic is False and random_run.trace.result == "True"
    # A fresh namespace each time: module state does not leak from one execution to the next.
    assert leaking_run.trace.deterministic is True
    assert timed_run.trace.deterministic is False
    assert once.trace.deterministic is None
    assert stable_run.trace.anchor_text() == once.trace.anchor_text()


def test_batched_traces_equal_one_run_per_program(local_sandbox):
    def seen(run):
        return run.status, run.trace.result, run.trace.error, run.trace.anchor_text(), run.trace.program_stdout

    jobs = [TraceJob(instrument(code), call) for _, code, call in TRICKY_PROGRAMS]
    batched = run_traces(jobs, local_sandbox, timeout_s=10, batch=8, cross_check=True)
    alone = run_traces(jobs, local_sandbox, timeout_s=10, batch=1)
    for (name, _, _), one, other in zip(TRICKY_PROGRAMS, batched, alone):
        # A set of strings iterates in hash-seed order, which differs per run; a generator's repr is
        # recorded without its address, so it does not.
        if name == "unicode":
            assert one.trace.deterministic is False, name
            continue
        assert " at 0x" not in one.trace.anchor_text() + str(one.trace.result), name
        assert one.trace.deterministic is True, name
        assert seen(one) == seen(other), name


def test_cross_check_catches_hash_order_and_randomness(local_sandbox):
    hash_order = "def f(words):\n    seen = list(set(words))\n    return seen\n"
    stable = "def f(words):\n    seen = sorted(set(words))\n    return seen\n"
    randomized = "import random\n\ndef f():\n    k = random.random()\n    return k < 2\n"
    words = repr([f"w{i}" for i in range(30)])
    jobs = [TraceJob(instrument(hash_order), f"f({words})"), TraceJob(instrument(stable), f"f({words})"),
            TraceJob(instrument(randomized), "f()")]
    same_interpreter = run_traces(jobs, local_sandbox, batch=8)
    assert [run.trace.deterministic for run in same_interpreter] == [None, None, None]
    checked = run_traces(jobs, local_sandbox, batch=8, cross_check=True)
    assert [run.trace.deterministic for run in checked] == [False, True, False]
