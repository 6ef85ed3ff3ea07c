"""Code versions derived from the code: an asset is recomputed when the code it runs changes.

``code_version(module, name)`` hashes the source of what the asset ``name`` of ``module`` runs:

* its own definition and every top-level definition of its module that it uses, transitively
  (functions, classes, constants: found by the names the definitions load);
* every project module (``stepcode_core``, ``sandbox``, ``pipelines``) that those import, and every
  project module that one imports, at any depth, imports inside functions included; a package's
  ``__init__`` counts for the modules below it. The code the pipeline sends to the sandbox
  (the trace runtime, the check runtime, the REval tracer, the sandbox worker) lives in such
  modules, read by the module that sends it, so it counts as code of the asset that sends it;
* :data:`SALT` and ``$STEPCODE_CODE_SALT``, for changes outside the tree (a library upgrade that
  changes results, a new sandbox image): bump one to recompute everything.

Editing a function on an asset's path therefore changes that asset's code version (and, through
the cache keys of :mod:`pipelines.storage`, what is downstream of it); editing code the asset does
not reach changes nothing. Hashes are of the source text, so a comment counts: a stale cache is
worse than a needless recompute. Outside the asset's own module the unit is the module, not the
function: the analysis stays small enough to audit, and it errs on the side of recomputing.

Hand-written: Dagster's ``code_version`` is a string it compares, not something it derives.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the folder holding the project's packages
PACKAGES = ("stepcode_core", "sandbox", "pipelines")
SALT = "1"  # bump to recompute every asset (a change outside the tree)


def code_version(module: str, name: str) -> str:
    """The code version of the top-level definition ``name`` of the project module ``module``."""
    return _INDEX.code_version(module, name)


class CodeIndex:
    """The project's source under ``root``, parsed once per module."""

    def __init__(self, root: Path = ROOT):
        self.root = Path(root)
        self._files: dict[str, Path | None] = {}
        self._trees: dict[str, tuple[ast.Module, str]] = {}
        self._closures: dict[frozenset, frozenset] = {}

    def code_version(self, module: str, name: str) -> str:
        _, source = self._parsed(module)
        own, imported = self._closure(module, name)
        digest = hashlib.sha256()
        digest.update(f"salt:{SALT}:{os.environ.get('STEPCODE_CODE_SALT', '')}\n".encode())
        for node in own:  # the module's definitions the asset uses, in file order
            digest.update((ast.get_source_segment(source, node) or ast.dump(node)).encode() + b"\n")
        for dependency in sorted(self.modules_closure(frozenset(imported))):
            digest.update(f"{dependency}:{hashlib.sha256(self.module_file(dependency).read_bytes()).hexdigest()}\n".encode())
        return digest.hexdigest()[:16]

    def modules_of(self, module: str, name: str) -> list[str]:
        """The project modules the version of ``name`` covers (besides its own module's definitions)."""
        _, imported = self._closure(module, name)
        return sorted(self.modules_closure(frozenset(imported)))

    # ------------------------------------------------------------ within the asset's module

    def _closure(self, module: str, name: str) -> tuple[list[ast.stmt], set[str]]:
        """The module's top-level statements ``name`` reaches, and the project modules they import."""
        tree, _ = self._parsed(module)
        definitions = _top_level(tree)
        if name not in definitions:
            raise ValueError(f"{module} has no top-level definition {name!r}")
        imports = {bound: target for node in tree.body for bound, target in self._import_targets(node, module)}
        seen: set[str] = set()
        todo = [name]
        modules: set[str] = set()
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            for used in _free_names(definitions[current]):
                if used in definitions:
                    todo.append(used)
                elif used in imports:
                    modules.add(imports[used])
            modules |= self._project_imports(definitions[current], module)
        own = [node for node in tree.body if any(n in seen for n in _bound_by(node))]
        return own, modules

    # ------------------------------------------------------------ across project modules

    def _import_targets(self, node: ast.AST, module: str) -> list[tuple[str, str]]:
        """(name bound, project module) for an import statement; others give nothing."""
        found = []
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_project(alias.name):
                    # ``import a.b`` binds ``a`` and makes a.b reachable through it: count a.b
                    found.append(((alias.asname or alias.name).split(".")[0], alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level and _is_project(node.module):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.append((alias.asname or alias.name, candidate if self.module_file(candidate) else node.module))
        return found

    def _project_imports(self, node: ast.AST, module: str) -> set[str]:
        """Project modules imported anywhere inside ``node`` (function-level imports too)."""
        return {target for child in ast.walk(node) for _, target in self._import_targets(child, module)}

    def modules_closure(self, start: frozenset[str]) -> frozenset[str]:
        """Every project module reachable from ``start`` by imports, with the packages above each."""
        if start not in self._closures:
            seen: set[str] = set()
            todo = list(start)
            while todo:
                module = todo.pop()
                if module in seen or self.module_file(module) is None:
                    continue
                seen.add(module)
                parts = module.split(".")
                todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages' __init__
                tree, _ = self._parsed(module)
                todo += self._project_imports(tree, module)
            self._closures[start] = frozenset(seen)
        return self._closures[start]

    def module_file(self, module: str) -> Path | None:
        if module not in self._files:
            path = self.root.joinpath(*module.split("."))
            self._files[module] = next((c for c in (path.with_suffix(".py"), path / "__init__.py") if c.is_file()), None)
        return self._files[module]

    def _parsed(self, module: str) -> tuple[ast.Module, str]:
        if module not in self._trees:
            path = self.module_file(module)
            if path is None:
                raise ValueError(f"{module} is not a module of this project (looked under {self.root})")
            source = path.read_text(encoding="utf-8")
            self._trees[module] = ast.parse(source, filename=str(path)), source
        return self._trees[module]


def _top_level(tree: ast.Module) -> dict[str, ast.stmt]:
    """Name -> the top-level statement that binds it (the last one, as at run time)."""
    found: dict[str, ast.stmt] = {}
    for node in tree.body:
        for bound in _bound_by(node):
            found[bound] = node
    return found


def _bound_by(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    return []


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)


def _free_names(node: ast.AST) -> set[str]:
    """Names the statement may read from its module's globals: every name loaded in a scope that
    neither that scope nor one enclosing it (within the statement) binds. Parameters that share an
    upstream asset's name are thus not taken for that asset."""
    if isinstance(node, _SCOPES):
        return _scope_free(node, set())
    loaded: set[str] = set()
    for child in ast.iter_child_nodes(node):
        loaded |= _free_names(child) if isinstance(child, _SCOPES) else _loads(child, set())
    return loaded


def _scope_free(scope: ast.AST, enclosing: set[str]) -> set[str]:
    """Free names of one scope; decorators, defaults, annotations and bases belong to the outside."""
    outside: list[ast.AST] = []
    inside: list[ast.AST] = []
    bound: set[str] = set()
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        args = scope.args
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, *filter(None, (args.vararg, args.kwarg))]
        bound |= {a.arg for a in every}
        outside += [*args.defaults, *filter(None, args.kw_defaults), *(a.annotation for a in every if a.annotation)]
        if not isinstance(scope, ast.Lambda):
            outside += [*scope.decorator_list, *filter(None, [scope.returns])]
            inside += scope.body
        else:
            inside.append(scope.body)
    elif isinstance(scope, ast.ClassDef):
        outside += [*scope.decorator_list, *scope.bases, *(k.value for k in scope.keywords)]
        inside += scope.body
    else:  # a comprehension: the first iterable is evaluated outside
        outside.append(scope.generators[0].iter)
        for index, generator in enumerate(scope.generators):
            bound |= {n.id for n in ast.walk(generator.target) if isinstance(n, ast.Name)}
            inside += [*generator.ifs, *([generator.iter] if index else [])]
        inside += [scope.key, scope.value] if isinstance(scope, ast.DictComp) else [scope.elt]
    declared: set[str] = set()
    for part in inside:
        bound |= _stores(part)
        declared |= {n for child in _same_scope(part) if isinstance(child, (ast.Global, ast.Nonlocal))
                     for n in child.names}
    visible = (enclosing | bound) - declared
    free: set[str] = set()
    for part in outside:
        free |= _loads(part, enclosing)
    for part in inside:
        free |= _loads(part, visible)
    return free


def _same_scope(node: ast.AST):
    """``node`` and its descendants, not entering nested scopes."""
    yield node
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, _SCOPES):
            yield from _same_scope(child)


def _stores(node: ast.AST) -> set[str]:
    """Names bound in the scope ``node`` belongs to (assignments, imports, nested definitions)."""
    names: set[str] = set()
    for child in _same_scope(node):
        if isinstance(child, ast.Name) and not isinstance(child.ctx, ast.Load):
            names.add(child.id)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in child.names}
        elif isinstance(child, ast.ExceptHandler) and child.name:
            names.add(child.name)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names.add(node.name)
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(child.name)
    return names


def _loads(node: ast.AST, visible: set[str]) -> set[str]:
    """Names loaded in ``node``'s scope (and, through nested scopes, theirs) not in ``visible``."""
    free: set[str] = set()
    if isinstance(node, _SCOPES):
        return _scope_free(node, visible)
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in visible:
        free.add(node.id)
    for child in ast.iter_child_nodes(node):
        free |= _loads(child, visible)
    return free


def _is_project(module: str) -> bool:
    return module.split(".")[0] in PACKAGES


_INDEX = CodeIndex()
