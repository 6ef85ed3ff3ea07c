"""A seeded generator of CRUXEval-style programs at four difficulty levels: the embedded default
source, so that the pipeline runs with no download.

Each program is one function ``f`` with a concrete input. The levels (:data:`LEVELS`):

1. one or two straight-line assignments over a small int or a short string (``y = x + 3``);
2. two or three straight-line steps over ints, short strings and short lists, with library calls
   (``len``, ``sorted``, slicing, ``str`` methods) and no control flow;
3. two or three steps, one of them a branch or a short ``for`` loop;
4. CRUXEval-like: 2-5 steps over strings, lists, dicts and ints (library calls, branches, ``for``
   and ``while`` loops, comprehensions, in-place updates), prompts of ~250 tokens.

The same ``(seed, index, level)`` always yields the same program. No well-kept library generates
such programs, hence this module; its output still goes through execution and the filters, which
drop the rare program that fails or misbehaves.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

_LETTERS = string.ascii_lowercase
_WORDS = ["apple", "kiwi", "banana", "fig", "mango", "pear", "plum", "lime", "grape", "melon", "cherry", "date"]


@dataclass(frozen=True)
class GeneratedProgram:
    program_id: str
    code: str
    input: str  # the call's arguments, as in CRUXEval: f(<input>)
    level: int = 4  # difficulty, 1 (one assignment) to 4 (loops and branches)


class _Builder:
    """Accumulates the body of ``f`` and the variables available to the next step, by kind."""

    def __init__(self, rng: random.Random, kind: str, param: str):
        self.rng = rng
        self.lines: list[str] = []
        self.vars: dict[str, list[str]] = {"str": [], "list": [], "dict": [], "int": []}
        self.vars[kind].append(param)
        self.used: set[str] = {param}

    def fresh(self, base: str) -> str:
        name, index = base, 1
        while name in self.used:
            index += 1
            name = f"{base}{index}"
        self.used.add(name)
        return name

    def pick(self, kind: str) -> str | None:
        return self.rng.choice(self.vars[kind]) if self.vars[kind] else None

    def emit(self, *lines: str) -> None:
        self.lines.extend(lines)

    def define(self, kind: str, name: str) -> None:
        if name not in self.vars[kind]:
            self.vars[kind].append(name)


def _char(rng: random.Random) -> str:
    return rng.choice(_LETTERS[:8])


# Each step takes the builder, may emit lines and define variables; returns False when it does not apply.
def _str_case(b: _Builder) -> bool:
    text = b.pick("str")
    if text is None:
        return False
    method = b.rng.choice(["upper", "lower", "swapcase", "title", "strip", "capitalize"])
    b.emit(f"{text} = {text}.{method}()")
    return True


def _str_count(b: _Builder) -> bool:
    text = b.pick("str")
    if text is None:
        return False
    count = b.fresh("count")
    b.emit(f"{count} = {text}.count({_char(b.rng)!r})")
    b.define("int", count)
    return True


def _str_filter_loop(b: _Builder) -> bool:
    text = b.pick("str")
    if text is None:
        return False
    result = b.fresh("result")
    test = b.rng.choice(["isalpha()", "isdigit()", "isupper()", "islower()", f"in {''.join(b.rng.sample(_LETTERS[:8], 3))!r}"])
    transform = b.rng.choice(["ch", "ch.upper()", "ch * 2", "ch + '-'"])
    negate = b.rng.choice(["", "not "])
    b.emit(f"{result} = ''", f"for ch in {text}:", f"    if {negate}ch.{test}:" if not test.startswith("in ") else f"    if {negate}ch {test}:", f"        {result} += {transform}")
    b.define("str", result)
    return True


def _str_split_join(b: _Builder) -> bool:
    text = b.pick("str")
    if text is None:
        return False
    parts = b.fresh("parts")
    sep = b.rng.choice([" ", "a", "e", ","])
    joiner = b.rng.choice(["-", "", "|", " "])
    b.emit(f"{parts} = {text}.split({sep!r})")
    if b.rng.random() < 0.5:
        b.emit(f"{parts}.reverse()")
    joined = b.fresh("joined")
    b.emit(f"{joined} = {joiner!r}.join({parts})")
    b.define("str", joined)
    return True


def _str_find_cut(b: _Builder) -> bool:
    text = b.pick("str")
    if text is None:
        return False
    index = b.fresh("idx")
    b.emit(
        f"{index} = {text}.find({_char(b.rng)!r})",
        f"if {index} != -1:",
        f"    {text} = {text}[:{index}] + {text}[{index} + 1:]",
        "else:",
        f"    {text} = {text} + {_char(b.rng)!r}",
    )
    b.define("int", index)
    return True


def _str_replace(b: _Builder) -> bool:
    text = b.pick("str")
    if text is None:
        return False
    old, new = b.rng.sample(_LETTERS[:8], 2)
    b.emit(f"{text} = {text}.replace({old!r}, {new!r})")
    return True


def _list_aggregate(b: _Builder) -> bool:
    nums = b.pick("list")
    if nums is None:
        return False
    name = b.fresh(b.rng.choice(["total", "biggest", "smallest", "size"]))
    func = {"total": "sum", "biggest": "max", "smallest": "min", "size": "len"}[name.rstrip("0123456789")]
    default = "" if func in ("sum", "len") else ", default=0"
    b.emit(f"{name} = {func}({nums}{default})")
    b.define("int", name)
    return True


def _list_comprehension(b: _Builder) -> bool:
    nums = b.pick("list")
    if nums is None:
        return False
    out = b.fresh(b.rng.choice(["evens", "odds", "scaled", "kept"]))
    k = b.rng.randint(2, 4)
    expression = {
        "evens": f"[x for x in {nums} if x % 2 == 0]",
        "odds": f"[x for x in {nums} if x % 2 == 1]",
        "scaled": f"[x * {k} for x in {nums}]",
        "kept": f"[x for x in {nums} if x > {k}]",
    }[out.rstrip("0123456789")]
    b.emit(f"{out} = {expression}")
    b.define("list", out)
    return True


def _list_index_loop(b: _Builder) -> bool:
    nums = b.pick("list")
    if nums is None:
        return False
    k = b.rng.randint(1, 5)
    op = b.rng.choice([f"{nums}[i] -= {k}", f"{nums}[i] += i", f"{nums}[i] = {nums}[i] * 2"])
    b.emit(f"for i in range(len({nums})):", f"    if {nums}[i] > {k}:", f"        {op}")
    return True


def _list_mutate(b: _Builder) -> bool:
    nums = b.pick("list")
    if nums is None:
        return False
    k = b.rng.randint(-3, 9)
    b.emit(b.rng.choice([
        f"{nums}.append({k})",
        f"{nums}.insert(0, {k})",
        f"{nums}.sort()",
        f"{nums}.reverse()",
        f"{nums} = {nums}[1:] + {nums}[:1]",
        f"{nums} = sorted({nums}, reverse=True)",
    ]))
    return True


def _list_count_dict(b: _Builder) -> bool:
    nums = b.pick("list")
    if nums is None:
        return False
    counts = b.fresh("counts")
    b.emit(f"{counts} = {{}}", f"for x in {nums}:", f"    {counts}[x] = {counts}.get(x, 0) + 1")
    b.define("dict", counts)
    return True


def _list_while_pop(b: _Builder) -> bool:
    nums = b.pick("list")
    if nums is None:
        return False
    k = b.rng.randint(2, 7)
    popped = b.fresh("popped")
    b.emit(f"{popped} = 0", f"while {nums} and {nums}[-1] > {k}:", f"    {nums}.pop()", f"    {popped} += 1")
    b.define("int", popped)
    return True


def _dict_keys(b: _Builder) -> bool:
    d = b.pick("dict")
    if d is None:
        return False
    keys, size = b.fresh("keys"), b.fresh("size")
    b.emit(f"{keys} = sorted({d}, key=str)", f"{size} = len({keys})")
    b.define("int", size)
    return True


def _dict_update(b: _Builder) -> bool:
    d = b.pick("dict")
    if d is None:
        return False
    key = b.rng.choice(_WORDS[:6] + [1, 2, 3])
    b.emit(b.rng.choice([
        f"{d}[{key!r}] = {d}.get({key!r}, 0) + {b.rng.randint(1, 4)}",
        f"{d}.pop({key!r}, None)",
        f"{d}.setdefault({key!r}, {b.rng.randint(0, 9)})",
    ]))
    return True


def _dict_invert(b: _Builder) -> bool:
    d = b.pick("dict")
    if d is None:
        return False
    inverted = b.fresh("inverted")
    b.emit(f"{inverted} = {{}}", f"for key, value in {d}.items():", f"    {inverted}[value] = key")
    b.define("dict", inverted)
    return True


def _dict_total(b: _Builder) -> bool:
    d = b.pick("dict")
    if d is None:
        return False
    total = b.fresh("total")
    b.emit(f"{total} = 0", f"for value in {d}.values():", "    if isinstance(value, int):", f"        {total} += value")
    b.define("int", total)
    return True


def _int_halve(b: _Builder) -> bool:
    n = b.pick("int")
    if n is None:
        return False
    steps = b.fresh("steps")
    k = b.rng.randint(1, 4)
    b.emit(f"{steps} = 0", f"while {n} > {k}:", f"    {n} //= 2", f"    {steps} += 1")
    b.define("int", steps)
    return True


def _int_branch(b: _Builder) -> bool:
    n = b.pick("int")
    if n is None:
        return False
    k = b.rng.randint(2, 5)
    b.emit(f"if {n} % {k} == 0:", f"    {n} = {n} // {k}", "else:", f"    {n} = {n} * {k} + 1")
    return True


def _int_digits(b: _Builder) -> bool:
    n = b.pick("int")
    if n is None:
        return False
    digits = b.fresh("digits")
    b.emit(f"{digits} = [int(c) for c in str(abs({n}))]")
    b.define("list", digits)
    return True


def _int_to_text(b: _Builder) -> bool:
    n = b.pick("int")
    if n is None:
        return False
    label = b.fresh("label")
    b.emit(f"{label} = str({n}).zfill({b.rng.randint(2, 5)})")
    b.define("str", label)
    return True


_STEPS = [  # level 4
    _str_case, _str_count, _str_filter_loop, _str_split_join, _str_find_cut, _str_replace,
    _list_aggregate, _list_comprehension, _list_index_loop, _list_mutate, _list_count_dict, _list_while_pop,
    _dict_keys, _dict_update, _dict_invert, _dict_total,
    _int_halve, _int_branch, _int_digits, _int_to_text,
]

# ---- levels 1-3: short programs a small model can learn to trace --------------------------------

_SHORT_WORDS = ["ab", "c", "xy", "hi", "no", "q", "cat", "sun"]


def _small_step(b: _Builder, level: int) -> bool:
    """One straight-line step of level 1 or 2 on a variable the builder holds (level 2 adds lists and
    library calls)."""
    rng = b.rng
    kinds = [kind for kind in (("int", "str") if level == 1 else ("int", "str", "list")) if b.vars[kind]]
    kind = rng.choice(kinds)
    source = b.vars[kind][-1]
    k = rng.randint(1, 5)
    if kind == "int":
        options = [(f"{source} + {k}", "int"), (f"{source} - {k}", "int"), (f"{source} * {k % 3 + 2}", "int")]
        if level == 2:
            options += [(f"{source} // 2", "int"), (f"{source} % {k + 1}", "int"), (f"str({source})", "str"),
                        (f"[{source}, {k}]", "list")]
    elif kind == "str":
        word = rng.choice(_SHORT_WORDS)
        options = [(f"{source} + {word!r}", "str"), (f"{word!r} + {source}", "str"), (f"{source} * 2", "str"),
                   (f"{source}.upper()", "str")]
        if level == 2:
            options += [(f"len({source})", "int"), (f"{source}[::-1]", "str"), (f"{source}[:2]", "str"),
                        (f"{source}.replace('a', {word[:1]!r})", "str"), (f"list({source})", "list")]
    else:
        options = [(f"len({source})", "int"), (f"sum({source})", "int"), (f"sorted({source})", "list"),
                   (f"{source} + [{k}]", "list"), (f"{source}[::-1]", "list"), (f"{source}[0]", "int"),
                   (f"max({source})", "int")]
    expression, result_kind = rng.choice(options)
    name = b.fresh({"int": "y", "str": "t", "list": "ys"}[result_kind])
    b.emit(f"{name} = {expression}")
    b.define(result_kind, name)
    return True


def _control_step(b: _Builder) -> bool:
    """Level 3's one branch or short loop, on the latest variable of a kind the builder holds."""
    rng = b.rng
    kind = rng.choice([kind for kind in ("int", "str", "list") if b.vars[kind]])
    source = b.vars[kind][-1]
    if kind == "list":
        total = b.fresh("total")
        body = rng.choice(["x", f"x * {rng.randint(2, 3)}", "1"])
        b.emit(f"{total} = 0", f"for x in {source}:", f"    {total} += {body}")
        b.define("int", total)
    elif kind == "int":
        k = rng.randint(2, 6)
        name = b.fresh("y")
        b.emit(f"if {source} > {k}:", f"    {name} = {source} - {k}", "else:", f"    {name} = {source} + {k}")
        b.define("int", name)
    else:
        name = b.fresh("t")
        ch = rng.choice("abcxyhinoqtu")
        b.emit(f"if {ch!r} in {source}:", f"    {name} = {source}.upper()", "else:", f"    {name} = {source} + {ch!r}")
        b.define("str", name)
    return True


def _small_input(rng: random.Random, kind: str) -> str:
    if kind == "int":
        return repr(rng.randint(0, 9))
    if kind == "str":
        return repr(rng.choice(_SHORT_WORDS))
    return repr([rng.randint(0, 5) for _ in range(rng.randint(1, 3))])


def _short_program(rng: random.Random, level: int) -> tuple[str, str]:
    """(code, input) of a level 1-3 program: the steps chain, each on the latest variable."""
    kind = rng.choice(["int", "str"] if level == 1 else ["int", "str", "list"])
    param = {"int": "x", "str": "s", "list": "xs"}[kind]
    builder = _Builder(rng, kind, param)
    builder.vars = {"str": [], "list": [], "dict": [], "int": []}
    builder.vars[kind].append(param)
    steps = rng.randint(1, 2) if level == 1 else rng.randint(2, 3)
    control_at = rng.randrange(steps) if level == 3 else -1
    for index in range(steps):
        if index == control_at:
            _control_step(builder)
        else:
            _small_step(builder, min(level, 2))
    result = builder.lines[-1].split(" = ")[0].strip() if " = " in builder.lines[-1] else _last_defined(builder)
    body = "\n".join(f"    {line}" for line in [*builder.lines, f"return {result}"])
    return f"def f({param}):\n{body}\n", _small_input(rng, kind)


def _last_defined(builder: _Builder) -> str:
    assigned = [line.strip().split(" = ")[0].split(" += ")[0] for line in builder.lines if "=" in line]
    return assigned[-1]


def _random_input(rng: random.Random, kind: str) -> str:
    if kind == "str":
        words = rng.sample(_WORDS, rng.randint(1, 3))
        text = " ".join(words)
        if rng.random() < 0.4:
            text += str(rng.randint(0, 99))
        if rng.random() < 0.3:
            text = text.title()
        return repr(text)
    if kind == "list":
        return repr([rng.randint(-5, 12) for _ in range(rng.randint(2, 7))])
    if kind == "dict":
        keys = rng.sample(_WORDS, rng.randint(1, 4))
        return repr({key: rng.randint(0, 9) for key in keys})
    return repr(rng.randint(1, 500))


_PARAMETERS = {"str": "text", "list": "nums", "dict": "d", "int": "n"}


LEVELS = (1, 2, 3, 4)


def generate_program(seed: int, index: int, level: int = 4, attempt: int = 0) -> GeneratedProgram:
    """Program ``index`` of ``seed`` at ``level``; ``attempt`` > 0 draws another one (for a duplicate)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level}")
    if level < 4:
        rng = random.Random(f"stepcode-generator:{seed}:{index}:level{level}" + (f":{attempt}" if attempt else ""))
        code, arguments = _short_program(rng, level)
        return GeneratedProgram(program_id=f"gen-{seed}-{index}", code=code, input=arguments, level=level)
    # level 4: the programs of earlier versions
    rng = random.Random(f"stepcode-generator:{seed}:{index}" + (f":{attempt}" if attempt else ""))
    kind = rng.choice(["str", "str", "list", "list", "dict", "int"])
    builder = _Builder(rng, kind, _PARAMETERS[kind])
    wanted = rng.randint(2, 5)
    attempts = 0
    applied = 0
    while applied < wanted and attempts < 40:
        attempts += 1
        if rng.choice(_STEPS)(builder):
            applied += 1
    returned = [name for names in builder.vars.values() for name in names]
    if len(returned) > 1 and rng.random() < 0.3:
        result = f"({', '.join(rng.sample(returned, 2))})"
    else:
        last_defined = [line.split(" = ")[0] for line in builder.lines if " = " in line and not line.startswith(" ")]
        candidates = [name for name in last_defined if name in returned] or returned
        result = candidates[-1]
    body = "\n".join(f"    {line}" for line in [*builder.lines, f"return {result}"])
    code = f"def f({_PARAMETERS[kind]}):\n{body}\n"
    return GeneratedProgram(program_id=f"gen-{seed}-{index}", code=code, input=_random_input(rng, kind), level=4)


def generate_programs(count: int, seed: int = 0, levels: tuple[int, ...] | list[int] = (4,)) -> list[GeneratedProgram]:
    """``count`` distinct programs (code and input), program ``i`` at level ``levels[i % len(levels)]``,
    drawn again while it repeats an earlier one: a held-out program never duplicates a training one.
    Program ``i`` depends only on ``seed``, the levels and the programs before it, so a larger count
    extends a smaller one."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if not levels or any(level not in LEVELS for level in levels):
        raise ValueError(f"levels must be a non-empty list of {list(LEVELS)}, got {list(levels)}")
    seen: set[tuple[str, str]] = set()
    programs = []
    for index in range(count):
        level = levels[index % len(levels)]
        for attempt in range(_MAX_ATTEMPTS):
            program = generate_program(seed, index, level, attempt)
            if (program.code, program.input) not in seen:
                break
        else:
            raise ValueError(f"level {level} ran out of distinct programs at {index}: lower the count")
        seen.add((program.code, program.input))
        programs.append(program)
    return programs


_MAX_ATTEMPTS = 100
