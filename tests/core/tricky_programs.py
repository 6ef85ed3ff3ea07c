"""A corpus of ordinary but varied Python scripts, written to trip a tracer: classes with dunder
methods, closures, generators, decorators, ``try/finally``, ``with``, semicolons, shadowed builtins,
programs that print lines shaped like anchors, module-level state, default reprs with addresses.
Every one is deterministic. Used with the ``files`` source and an independent oracle (``sys.settrace``
on the original program) in ``test_trace_truth.py``."""

PROGRAMS = {
    "repr_with_anchors": '''
class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y
    def __repr__(self):
        text = f"Point({self.x}, {self.y})"
        return text
p = Point(1, 2)
q = Point(p.x + 3, p.y * 2)
pair = [p, q]
total = p.x + q.x
''',
    "default_reprs": '''
class Node:
    def __init__(self, value):
        self.value = value
def make(step):
    def inc(x):
        return x + step
    return inc
def gen(n):
    for i in range(n):
        yield i
node = Node(3)
adder = make(2)
numbers = gen(3)
view = memoryview(b"abc")
first = next(numbers)
result = adder(node.value) + first
''',
    "dunder_eq_hash": '''
class Key:
    def __init__(self, name):
        self.name = name
    def __eq__(self, other):
        same = isinstance(other, Key) and other.name == self.name
        return same
    def __hash__(self):
        h = len(self.name)
        return h
    def __repr__(self):
        return "Key(" + repr(self.name) + ")"
table = {Key("a"): 1, Key("bb"): 2}
found = table[Key("a")]
keys = sorted(k.name for k in table)
''',
    "property_and_slots": '''
class Box:
    __slots__ = ("_w", "_h")
    def __init__(self, w, h):
        self._w = w
        self._h = h
    @property
    def area(self):
        a = self._w * self._h
        return a
    def __repr__(self):
        return f"Box({self._w}x{self._h})"
b = Box(3, 4)
area = b.area
boxes = [Box(1, 1), b]
areas = [x.area for x in boxes]
''',
    "closures_nonlocal": '''
def counter():
    count = 0
    def bump(by=1):
        nonlocal count
        count += by
        return count
    return bump
c = counter()
a = c()
b = c(5)
total = a + b
''',
    "generators": '''
def evens(limit):
    n = 0
    while n < limit:
        yield n
        n += 2
values = list(evens(7))
squares = [v * v for v in values]
it = iter(squares)
head = next(it)
rest = list(it)
''',
    "decorators": '''
import functools
def logged(fn):
    calls = []
    @functools.wraps(fn)
    def wrapper(*args):
        calls.append(args)
        out = fn(*args)
        return out
    wrapper.calls = calls
    return wrapper
@logged
def add(a, b):
    s = a + b
    return s
x = add(1, 2)
y = add(x, 10)
seen = add.calls
''',
    "try_finally": '''
log = []
def risky(n):
    try:
        if n < 0:
            raise ValueError("negative")
        value = n * 2
        return value
    except ValueError as exc:
        message = str(exc)
        return message
    finally:
        log.append(n)
a = risky(3)
b = risky(-1)
history = list(log)
''',
    "with_context": '''
class Recorder:
    def __init__(self):
        self.events = []
    def __enter__(self):
        self.events.append("enter")
        return self
    def __exit__(self, *exc):
        self.events.append("exit")
        return False
    def __repr__(self):
        return f"Recorder({self.events})"
with Recorder() as r:
    inside = len(r.events)
after = r.events
''',
    "semicolons": '''
a = 1; b = 2; c = a + b
d = [a, b, c]; d.append(4)
e = sum(d); f = e * 2
''',
    "shadowed_builtins": '''
list = [3, 1, 2]
max = 10
sorted_values = sorted(list)
def len(x):
    return 42
size = len(sorted_values)
biggest = max
''',
    "prints_anchor_lines": '''
x = 5
print("x: 5")
print("return: 'fake'")
y = x * 2
print(f"y: {y + 1}")
z = y - x
''',
    "module_state": '''
CACHE = {}
def fib(n):
    if n in CACHE:
        return CACHE[n]
    value = n if n < 2 else fib(n - 1) + fib(n - 2)
    CACHE[n] = value
    return value
result = fib(6)
size = len(CACHE)
''',
    "inheritance_super": '''
class Animal:
    def __init__(self, name):
        self.name = name
    def speak(self):
        sound = "..."
        return sound
    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"
class Dog(Animal):
    def speak(self):
        base = super().speak()
        return base + "woof"
pets = [Animal("a"), Dog("d")]
sounds = [p.speak() for p in pets]
last = pets[-1]
''',
    "classmethods": '''
class Temp:
    unit = "C"
    def __init__(self, degrees):
        self.degrees = degrees
    @classmethod
    def from_f(cls, f):
        c = round((f - 32) * 5 / 9, 2)
        return cls(c)
    @staticmethod
    def describe(t):
        text = f"{t.degrees}{Temp.unit}"
        return text
t = Temp.from_f(212)
label = Temp.describe(t)
''',
    "dataclass_obj": '''
from dataclasses import dataclass, field
@dataclass
class Item:
    name: str
    qty: int = 1
    tags: list = field(default_factory=list)
a = Item("pen", 3)
b = Item("ink")
b.tags.append("blue")
items = [a, b]
count = sum(i.qty for i in items)
''',
    "namedtuple_counter": '''
from collections import namedtuple, Counter, defaultdict, deque
P = namedtuple("P", "x y")
p = P(1, 2)
c = Counter("abracadabra")
top = c.most_common(2)
d = defaultdict(list)
d["k"].append(1)
q = deque([1, 2, 3], maxlen=3)
q.append(4)
''',
    "walrus_comprehension": '''
data = [4, 7, 1, 9]
if (n := len(data)) > 3:
    big = [x for x in data if x > 3]
pairs = {x: x * x for x in data if x % 2}
flag = any(x > 8 for x in data)
''',
    "recursion_return": '''
def depth(tree):
    if not isinstance(tree, list):
        return 0
    inner = max((depth(t) for t in tree), default=0)
    return 1 + inner
d = depth([1, [2, [3]], []])
''',
    "lambda_sorted": '''
people = [("bo", 30), ("al", 25), ("cy", 35)]
key = lambda p: p[1]
ordered = sorted(people, key=key)
names = [name for name, _ in ordered]
oldest = max(people, key=key)
''',
    "global_statement": '''
total = 0
def add(n):
    global total
    total += n
    return total
first = add(3)
second = add(4)
''',
    "iterator_protocol": '''
class Countdown:
    def __init__(self, start):
        self.current = start
    def __iter__(self):
        return self
    def __next__(self):
        if self.current <= 0:
            raise StopIteration
        self.current -= 1
        return self.current + 1
steps = list(Countdown(3))
again = Countdown(2)
''',
    "bytes_and_sets": '''
raw = "héllo".encode("utf-8")
length = len(raw)
letters = frozenset([3, 1, 2])
ordered = sorted(letters)
s = {3, 1, 2}
s.add(0)
''',
    "floats_complex": '''
a = 0.1 + 0.2
b = round(a, 2)
z = complex(1, 2) * 2
m = divmod(17, 5)
''',
    "exceptions_caught": '''
def parse(text):
    try:
        number = int(text)
    except ValueError:
        number = -1
    return number
values = [parse(t) for t in ("12", "x", "7")]
ok = [v for v in values if v >= 0]
''',
    "string_methods": '''
s = "  Hello, World  "
t = s.strip().lower()
parts = t.split(", ")
joined = "-".join(reversed(parts))
count = joined.count("o")
''',
    "functions_as_values": '''
def double(x):
    return x * 2
def apply(fn, v):
    out = fn(v)
    return out
ops = [double, abs]
results = [apply(f, -3) for f in ops]
chosen = ops[0]
''',
    "class_attr_counter": '''
class Registry:
    instances = 0
    def __init__(self, tag):
        Registry.instances += 1
        self.tag = tag
        self.number = Registry.instances
    def __repr__(self):
        return f"R{self.number}:{self.tag}"
r1 = Registry("a")
r2 = Registry("b")
both = [r1, r2]
n = Registry.instances
''',
    "nested_functions": '''
def outer(values):
    def keep(v):
        ok = v % 3 != 0
        return ok
    kept = [v for v in values if keep(v)]
    return kept
result = outer(range(10))
''',
    "bound_methods": '''
class Acc:
    def __init__(self):
        self.items = []
    def add(self, x):
        self.items.append(x)
        return len(self.items)
acc = Acc()
push = acc.add
n1 = push(5)
n2 = push(6)
content = acc.items
''',
    "repr_reading_state": '''
class Stack:
    def __init__(self):
        self.data = []
    def push(self, v):
        self.data.append(v)
    def __repr__(self):
        size = len(self.data)
        return f"Stack(size={size})"
s = Stack()
s.push(1)
s.push(2)
top = s.data[-1]
''',
    "enumerate_zip": '''
names = ["a", "b", "c"]
scores = [3, 1, 2]
ranked = sorted(zip(scores, names))
indexed = list(enumerate(names, start=1))
best = ranked[-1][1]
''',
    "int_big": '''
big = 2 ** 100
digits = len(str(big))
half = big // 3
mod = big % 97
''',
}

# Functions called with an input, in CRUXEval's schema (``code``, ``input``): the shape a JSONL corpus
# of the ``files`` source has. Classes and closures inside, objects and functions returned.
FUNCTIONS = {
    "f_class_inside": ('''
def f(values):
    class Acc:
        def __init__(self):
            self.total = 0
        def add(self, v):
            self.total += v
            return self
        def __repr__(self):
            shown = f"Acc({self.total})"
            return shown
    acc = Acc()
    for v in values:
        acc.add(v)
    return acc
''', "[1, 2, 3]"),
    "f_returns_object": ('''
class Node:
    def __init__(self, value, nxt=None):
        self.value = value
        self.nxt = nxt
def f(xs):
    head = None
    for x in reversed(xs):
        head = Node(x, head)
    second = head.nxt
    return second
''', "[4, 5, 6]"),
    "f_closure_list": ('''
def f(n):
    funcs = [lambda x, k=k: x + k for k in range(n)]
    outs = [g(10) for g in funcs]
    first = funcs[0]
    return outs
''', "3"),
    "f_generator_state": ('''
def f(text):
    def words():
        for w in text.split():
            yield w.upper()
    it = words()
    head = next(it)
    rest = list(it)
    return head, rest
''', "'a bc d'"),
    "f_dunder_ops": ('''
class Vec:
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __add__(self, other):
        out = Vec(self.x + other.x, self.y + other.y)
        return out
    def __eq__(self, other):
        return (self.x, self.y) == (other.x, other.y)
    def __repr__(self):
        return f"Vec({self.x}, {self.y})"
def f(a, b):
    u = Vec(*a)
    v = Vec(*b)
    w = u + v
    same = w == Vec(a[0] + b[0], a[1] + b[1])
    return w, same
''', "(1, 2), (3, 4)"),
    "f_try_with": ('''
import io
def f(s):
    try:
        with io.StringIO(s) as buf:
            first = buf.readline().strip()
        n = int(first)
    except ValueError:
        n = -1
    finally:
        done = True
    return n
''', "'12\\nx'"),
    "f_prints_anchor_like": ('''
def f(x):
    print("x:", x)
    print("return: 0")
    y = x * 3
    return y
''', "7"),
    "f_default_repr_in_list": ('''
class Token:
    pass
def f(n):
    tokens = [Token() for _ in range(n)]
    count = len(tokens)
    return tokens[0]
''', "2"),
    "f_dict_of_functions": ('''
def double(x):
    return 2 * x
def f(x):
    table = {"d": double, "n": abs}
    picked = table["d"]
    value = picked(x)
    return value
''', "-4"),
    "f_dataclass": ('''
from dataclasses import dataclass
@dataclass(frozen=True)
class Pair:
    a: int
    b: int
def f(a, b):
    p = Pair(a, b)
    q = Pair(b, a)
    ordered = sorted([p, q], key=lambda t: t.a)
    return ordered
''', "3, 1"),
    "f_shadowed_builtins": ('''
def f(list, str):
    sum = 0
    for item in list:
        sum += len(str) + item
    max = sum * 2
    return max
''', "[1, 2], 'ab'"),
    "f_semicolons_walrus": ('''
def f(xs):
    a = 0; b = 1
    if (n := len(xs)) > 2:
        a = xs[0]; b = xs[-1]
    return a + b + n
''', "[5, 6, 7]"),
    "f_property_side_free": ('''
class Temp:
    def __init__(self, c):
        self._c = c
    @property
    def f(self):
        value = self._c * 9 / 5 + 32
        return value
def f(c):
    t = Temp(c)
    hot = t.f > 80
    return hot
''', "30"),
    "f_recursive_repr": ('''
class Tree:
    def __init__(self, *kids):
        self.kids = list(kids)
    def __repr__(self):
        inner = ", ".join(repr(k) for k in self.kids)
        return f"T({inner})"
def f(depth):
    t = Tree()
    for _ in range(depth):
        t = Tree(t, Tree())
    return t
''', "2"),
    "f_memoryview_bytes": ('''
def f(data):
    raw = bytes(data)
    view = memoryview(raw)
    part = view[1:3].tobytes()
    return part
''', "[1, 2, 3, 4]"),
}
