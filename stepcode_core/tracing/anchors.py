"""Execution-trace anchors: rewrite a program P into P' that reports its intermediate states.

The paper asked GPT-4o to insert ``print`` anchors; we insert them deterministically with ``ast``,
which is cheaper, reproducible and never changes the program's meaning. One transformation yields two renderings with the same lines:

* ``code`` — what a model reads: each anchor is ``print(f"NAME: {NAME!r}")``;
* ``harness`` — what the sandbox executes for ground truth: each anchor is
  ``__stepcode_anchor__(SITE, NAME)``, which writes the value to a channel that the program's own
  prints cannot imitate (see :mod:`stepcode_core.tracing.runner`), keeps count for the anchor-line cap and
  never raises, so P' keeps P's behaviour even when a ``repr`` fails.

Rules (policy ``paper``): an anchor after each significant assignment (plain names, tuple unpacking,
augmented and annotated assignment; item assignment ``d[k] = v``, ``del d[k]`` and in-place method
calls such as ``xs.append(v)`` report the container); ``return expr`` is
unrolled so that ``expr`` is evaluated once and reported as ``return``; no anchors inside loop bodies,
but after a loop an anchor for each name the loop assigned that is certainly bound there; returns
inside loops keep their anchor (it fires once per call). Policy ``dense`` also anchors inside loops,
including the loop variables, with a per-anchor hit cap applied when the harness runs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Iterable, Literal

Policy = Literal["paper", "dense"]
POLICIES: tuple[str, ...] = ("paper", "dense")

ANCHOR_FUNCTION = "__stepcode_anchor__"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RETURN_ANCHOR = "return"

# Calls whose results print as "<map object at 0x7f...>": the address changes per run, so a model could
# never predict it. The trace parser flags other such values at run time.
_ITERATOR_BUILTINS = frozenset({"map", "filter", "zip", "iter", "reversed", "enumerate"})


# In-place methods of list, dict and set: ``xs.append(v)`` as a statement changes the state of ``xs``.
_MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear",
    "update", "setdefault", "popitem", "add", "discard", "difference_update",
    "intersection_update", "symmetric_difference_update",
})


class InstrumentationError(ValueError):
    """The program cannot be instrumented (it does not parse, or uses a name we reserve)."""


@dataclass(frozen=True)
class AnchorSite:
    """One anchor statement in P'."""

    site_id: int
    name: str  # the variable reported, or "return"
    line: int  # line of the assignment / return in the original program P
    instrumented_line: int  # line of the anchor statement in P' (same in ``code`` and ``harness``)
    in_loop: bool  # inside a loop body (dense policy only; returns excepted)


@dataclass(frozen=True)
class PolicySettings:
    max_anchor_lines: int  # executed anchor lines above this mark the sample over the cap
    hit_cap: int | None  # per-site limit on reported hits (dense); None: no per-site limit


DEFAULT_SETTINGS: dict[str, PolicySettings] = {
    "paper": PolicySettings(max_anchor_lines=10, hit_cap=None),
    "dense": PolicySettings(max_anchor_lines=200, hit_cap=5),
}


@dataclass(frozen=True)
class InstrumentedProgram:
    original: str
    code: str
    harness: str
    policy: str
    sites: tuple[AnchorSite, ...]
    max_anchor_lines: int
    hit_cap: int | None
    # P' line -> P line, for every line of P' that holds a statement (anchors map to the line they report).
    line_map: dict[int, int] = field(repr=False)

    def original_line(self, instrumented_line: int) -> int | None:
        return self.line_map.get(instrumented_line)

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]


def instrument(
    code: str,
    policy: Policy = "paper",
    *,
    max_anchor_lines: int | None = None,
    hit_cap: int | None = None,
) -> InstrumentedProgram:
    """Return P' for the program ``code`` under ``policy`` (``paper`` or ``dense``)."""
    if policy not in DEFAULT_SETTINGS:
        raise InstrumentationError(f"unknown anchor policy {policy!r}; choose one of {', '.join(POLICIES)}")
    settings = DEFAULT_SETTINGS[policy]
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise InstrumentationError(f"program does not parse: {exc.msg} (line {exc.lineno})") from exc
    # Every identifier-like word of the source: a superset of its names, found without a tree walk.
    names_in_program = set(_IDENTIFIER.findall(code))
    if ANCHOR_FUNCTION in names_in_program:
        raise InstrumentationError(f"program uses the reserved name {ANCHOR_FUNCTION}")

    rewriter = _AnchorInserter(policy, _fresh_name("_return_value", names_in_program))
    tree.body = rewriter.block(tree.body, bound=set(), in_loop=False)
    harness = ast.unparse(tree)
    line_map, anchor_lines = _line_map(tree, harness)
    display = _display_code(harness, rewriter, anchor_lines)
    sites = tuple(
        AnchorSite(site_id, name, line, anchor_lines[site_id], in_loop)
        for site_id, (name, line, in_loop) in enumerate(rewriter.sites)
    )
    return InstrumentedProgram(
        original=code,
        code=display,
        harness=harness,
        policy=policy,
        sites=sites,
        max_anchor_lines=settings.max_anchor_lines if max_anchor_lines is None else max_anchor_lines,
        hit_cap=settings.hit_cap if hit_cap is None else hit_cap,
        line_map=line_map,
    )


def _fresh_name(base: str, taken: set[str]) -> str:
    name, suffix = base, 0
    while name in taken:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def _target_names(target: ast.expr) -> list[str]:
    """Names an assignment to ``target`` changes: ``a``, ``a, (b, *c)``, and ``d`` for ``d[i][j] = v``."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _target_names(element)]
    if isinstance(target, ast.Starred):
        return _target_names(target.value)
    if isinstance(target, ast.Subscript):
        base = target.value
        while isinstance(base, ast.Subscript):
            base = base.value
        # Only a plain name is re-read without side effects (an attribute may be a property).
        return [base.id] if isinstance(base, ast.Name) else []
    return []


def _stored_names(target: ast.expr) -> set[str]:
    """Names bound (not mutated) by an assignment to ``target``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_stored_names(element) for element in target.elts))
    if isinstance(target, ast.Starred):
        return _stored_names(target.value)
    return set()


def _mutated_name(stmt: ast.stmt) -> str | None:
    """``xs`` for a statement ``xs.append(v)`` (an in-place method called on a plain name)."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        func = stmt.value.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.attr in _MUTATING_METHODS:
            return func.value.id
    return None


def _reports_address(value: ast.expr | None) -> bool:
    """The value's repr would hold a memory address (lambdas, generators, lazy iterators)."""
    if isinstance(value, (ast.Lambda, ast.GeneratorExp)):
        return True
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id in _ITERATOR_BUILTINS
    )


def _ends_block(stmts: list[ast.stmt]) -> bool:
    return bool(stmts) and isinstance(stmts[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break))


def _assigned_in(stmts: Iterable[ast.stmt]) -> list[str]:
    """Names assigned anywhere in ``stmts``, in order, not descending into nested scopes."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                found.extend(_target_names(target))
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and (
            not isinstance(node, ast.AnnAssign) or node.value is not None
        ):
            found.extend(_target_names(node.target))
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            found.extend(_target_names(node.target))
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                if isinstance(target, ast.Subscript):
                    found.extend(_target_names(target))
        elif isinstance(node, ast.stmt) and _mutated_name(node):
            found.append(_mutated_name(node))
        for child in ast.iter_child_nodes(node):
            visit(child)

    for stmt in stmts:
        visit(stmt)
    return list(dict.fromkeys(found))


def _deleted_in(stmts: Iterable[ast.stmt]) -> set[str]:
    deleted: set[str] = set()
    for stmt in stmts:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Delete):
                for target in node.targets:
                    deleted |= _stored_names(target)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                deleted.add(node.name)  # Python unbinds the name at the end of the handler
    return deleted


def _parameters(args: ast.arguments) -> set[str]:
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    every += [arg for arg in (args.vararg, args.kwarg) if arg is not None]
    return {arg.arg for arg in every}


class _AnchorInserter:
    """Walks statement lists and inserts harness anchors; tracks which names are certainly bound so
    that an anchor never reads an unbound name (which would raise where P does not)."""

    def __init__(self, policy: str, return_name: str):
        self.dense = policy == "dense"
        self.return_name = return_name
        self.sites: list[tuple[str, int, bool]] = []  # (name, original line, in_loop)
        self.anchor_statements: list[ast.Expr] = []  # by site id

    def anchor(self, name: str, value: ast.expr, after: ast.stmt, in_loop: bool) -> ast.stmt:
        site_id = len(self.sites)
        self.sites.append((name, after.lineno, in_loop))
        call = ast.Call(ast.Name(ANCHOR_FUNCTION, ast.Load()), [ast.Constant(site_id), value], [])
        statement = ast.copy_location(ast.Expr(call), after)
        self.anchor_statements.append(statement)
        return statement

    def name_anchors(self, names: Iterable[str], after: ast.stmt, in_loop: bool) -> list[ast.stmt]:
        return [
            self.anchor(name, ast.Name(name, ast.Load()), after, in_loop)
            for name in dict.fromkeys(names)
            if name != "_"
        ]

    def block(self, stmts: list[ast.stmt], *, bound: set[str], in_loop: bool) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            out.extend(self.statement(stmt, bound, in_loop))
        return out

    def statement(self, stmt: ast.stmt, bound: set[str], in_loop: bool) -> list[ast.stmt]:
        anchors_here = self.dense or not in_loop
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stmt.body = self.block(stmt.body, bound=_parameters(stmt.args), in_loop=False)
            bound.add(stmt.name)
            return [stmt]
        if isinstance(stmt, ast.ClassDef):
            # Class-level assignments define the class; only its methods' states are anchored.
            for index, member in enumerate(stmt.body):
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    stmt.body[index : index + 1] = self.statement(member, set(), False)
            bound.add(stmt.name)
            return [stmt]
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                bound |= _stored_names(target)
            if not anchors_here or _reports_address(stmt.value):
                return [stmt]
            names = [name for target in stmt.targets for name in _target_names(target)]
            return [stmt, *self.name_anchors(names, stmt, in_loop)]
        if isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
            if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
                return [stmt]  # a bare annotation binds nothing
            bound |= _stored_names(stmt.target)
            if not anchors_here or _reports_address(stmt.value):
                return [stmt]
            return [stmt, *self.name_anchors(_target_names(stmt.target), stmt, in_loop)]
        if isinstance(stmt, ast.Return):
            return self.unrolled_return(stmt, in_loop)
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            return self.loop(stmt, bound, in_loop)
        if isinstance(stmt, ast.If):
            body_bound, else_bound = set(bound), set(bound)
            stmt.body = self.block(stmt.body, bound=body_bound, in_loop=in_loop)
            stmt.orelse = self.block(stmt.orelse, bound=else_bound, in_loop=in_loop)
            if _ends_block(stmt.body):
                bound |= else_bound
            elif _ends_block(stmt.orelse):
                bound |= body_bound
            else:
                bound |= body_bound & else_bound
            return [stmt]
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    bound |= _stored_names(item.optional_vars)
            # A context manager may swallow an exception: names bound in the body stay uncertain.
            stmt.body = self.block(stmt.body, bound=set(bound), in_loop=in_loop)
            return [stmt]
        if isinstance(stmt, (ast.Try, ast.TryStar)):
            stmt.body = self.block(stmt.body, bound=set(bound), in_loop=in_loop)
            for handler in stmt.handlers:
                handler_bound = set(bound) | ({handler.name} if handler.name else set())
                handler.body = self.block(handler.body, bound=handler_bound, in_loop=in_loop)
            stmt.orelse = self.block(stmt.orelse, bound=set(bound), in_loop=in_loop)
            stmt.finalbody = self.block(stmt.finalbody, bound=set(bound), in_loop=in_loop)
            bound -= _deleted_in([stmt])
            return [stmt]
        if isinstance(stmt, ast.Match):
            for case in stmt.cases:
                case.body = self.block(case.body, bound=set(bound), in_loop=in_loop)
            return [stmt]
        if isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                bound -= _stored_names(target)
            changed = [name for target in stmt.targets if isinstance(target, ast.Subscript) for name in _target_names(target)]
            return [stmt, *self.name_anchors(changed, stmt, in_loop)] if anchors_here else [stmt]
        mutated = _mutated_name(stmt)
        if mutated is not None:
            return [stmt, *self.name_anchors([mutated], stmt, in_loop)] if anchors_here else [stmt]
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in stmt.names}
            return [stmt]
        return [stmt]

    def unrolled_return(self, stmt: ast.Return, in_loop: bool) -> list[ast.stmt]:
        # A return fires once per call, so it keeps its anchor inside loops too.
        if stmt.value is None:
            return [self.anchor(RETURN_ANCHOR, ast.Constant(None), stmt, in_loop), stmt]
        if _reports_address(stmt.value):
            return [stmt]
        holder = ast.Name(self.return_name, ast.Store())
        assign = ast.copy_location(ast.Assign([holder], stmt.value), stmt)
        anchor = self.anchor(RETURN_ANCHOR, ast.Name(self.return_name, ast.Load()), stmt, in_loop)
        new_return = ast.copy_location(ast.Return(ast.Name(self.return_name, ast.Load())), stmt)
        return [assign, anchor, new_return]

    def loop(self, stmt: ast.For | ast.AsyncFor | ast.While, bound: set[str], in_loop: bool) -> list[ast.stmt]:
        body_bound = set(bound)
        prefix: list[ast.stmt] = []
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            body_bound |= _stored_names(stmt.target)
            if self.dense:
                prefix = self.name_anchors(_target_names(stmt.target), stmt, True)
        stmt.body = prefix + self.block(stmt.body, bound=body_bound, in_loop=True)
        stmt.orelse = self.block(stmt.orelse, bound=set(bound), in_loop=in_loop)
        bound -= _deleted_in(stmt.body) | _deleted_in(stmt.orelse)
        if self.dense or in_loop:
            return [stmt]
        # The paper's intent without trace explosion: report, once, what the loop changed.
        changed = [name for name in _assigned_in([stmt]) if name in bound]
        return [stmt, *self.name_anchors(changed, stmt, False)]


def _display_code(harness: str, rewriter: "_AnchorInserter", anchor_lines: dict[int, int]) -> str:
    """The harness with each anchor line rewritten as ``print(f'NAME: {VALUE!r}')``, the way a model
    reads it; every other line is untouched, so the two renderings share their line numbers."""
    lines = harness.split("\n")
    for site_id, (statement, (name, _, _)) in enumerate(zip(rewriter.anchor_statements, rewriter.sites)):
        index = anchor_lines[site_id] - 1
        indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
        value = statement.value.args[1]
        if isinstance(value, ast.Name):
            lines[index] = f"{indent}print(f'{name}: {{{value.id}!r}}')"
        else:  # a bare return reports the constant None
            lines[index] = f"{indent}print({f'{name}: {value.value!r}'!r})"
    return "\n".join(lines)


def _line_map(transformed: ast.Module, harness: str) -> tuple[dict[int, int], dict[int, int]]:
    """Pair every statement of the unparsed P' with the node it came from, whose line is P's."""
    reparsed = ast.parse(harness)
    old_statements = _statements(transformed.body)
    new_statements = _statements(reparsed.body)
    if len(old_statements) != len(new_statements):  # unparse round-trips structure; guard anyway
        raise InstrumentationError("internal error: P' does not round-trip through the parser")
    line_map: dict[int, int] = {}
    anchor_lines: dict[int, int] = {}
    for old, new in zip(old_statements, new_statements):
        line_map.setdefault(new.lineno, old.lineno)
        if (
            isinstance(new, ast.Expr)
            and isinstance(new.value, ast.Call)
            and isinstance(new.value.func, ast.Name)
            and new.value.func.id == ANCHOR_FUNCTION
        ):
            anchor_lines[new.value.args[0].value] = new.lineno
    return line_map, anchor_lines


def instrument_fields(code: str, policy: str) -> dict:
    """P' as dataset fields (``instrumented_code``, ``harness_code``, ``anchor_sites``,
    ``instrument_error``); a program that cannot be instrumented gets its error, not an exception."""
    try:
        program = instrument(code, policy=policy)  # type: ignore[arg-type]
    except InstrumentationError as exc:
        return {"instrumented_code": None, "harness_code": None, "anchor_sites": [], "instrument_error": str(exc)}
    return {
        "instrumented_code": program.code,
        "harness_code": program.harness,
        "anchor_sites": [
            {"name": s.name, "line": s.line, "instrumented_line": s.instrumented_line, "in_loop": s.in_loop}
            for s in program.sites
        ],
        "instrument_error": None,
    }


def instrument_fields_star(item: tuple[str, str]) -> dict:
    return instrument_fields(*item)


_BODY_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: list) -> list[ast.stmt]:
    """Every statement under ``body``, depth first (expressions are not visited: cheaper than ast.walk)."""
    found: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.stmt):
            found.append(node)
        for name in _BODY_FIELDS:
            children = getattr(node, name, None)
            if children:
                found.extend(_statements(children))
    return found
