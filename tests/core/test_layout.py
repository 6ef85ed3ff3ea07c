"""The architecture, checked: ``pipelines -> stepcode_core -> sandbox`` and never back, no process
forked outside the sandbox, every stage a documented subpackage, project imports at the top."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import stepcode_core

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("tracing", "data", "rewards", "training", "evaluation")
# Project imports inside a function, each for a stated reason (see the comment at each).
DEFERRED_IMPORTS = {
    ("pipelines/cli.py", "pipelines.demo"),  # loads the whole code location: only `stepcode demo` pays it
    ("stepcode_core/training/phases.py", "stepcode_core.training.grpo"),  # TRL and torch: only the GRPO phase
    ("pipelines/deployments.py", "pipelines.ray_runner"),  # dagster-ray, an optional extra: only when Ray is chosen
}


def _modules(package: str) -> list[str]:
    found = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
        if not info.name.endswith("__main__"):
            found.append(info.name)
    return found


def _python_files(*packages: str) -> list[Path]:
    return [path for package in packages for path in sorted((ROOT / package).rglob("*.py"))]


@pytest.mark.parametrize("package,forbidden", [("stepcode_core", ("dagster", "pipelines")),
                                               ("sandbox", ("dagster", "pipelines", "stepcode_core"))])
def test_core_and_sandbox_import_no_dagster(package, forbidden):
    """Every module of the package, imported in a fresh interpreter, loads neither Dagster nor the
    layers above it."""
    code = (f"import importlib, sys\nfor name in {_modules(package)!r}:\n    importlib.import_module(name)\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(forbidden)!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_process_is_forked_outside_the_sandbox():
    calls = []
    for path in _python_files("stepcode_core", "pipelines"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("fork", "forkpty", "register_at_fork") and \
                    isinstance(node.value, ast.Name) and node.value.id in ("os", "pty"):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert calls == []


def test_stages_are_documented_subpackages():
    for stage in STAGES:
        init = ROOT / "stepcode_core" / stage / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 30, f"stepcode_core.{stage} needs a paragraph saying what the stage is"
    top = [p.stem for p in (ROOT / "stepcode_core").glob("*.py") if p.stem != "__init__"]
    assert sorted(top) == ["cli", "models", "parallel", "paths"], "a module at the top that belongs to a stage"
    assert ast.get_docstring(ast.parse((ROOT / "stepcode_core" / "__init__.py").read_text()))


def test_project_imports_sit_at_the_top_of_modules():
    deferred = set()
    for path in _python_files("stepcode_core", "sandbox", "pipelines"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in ("stepcode_core", "sandbox", "pipelines"):
                        deferred.add((str(path.relative_to(ROOT)), name))
    assert deferred == DEFERRED_IMPORTS


def test_code_that_runs_in_the_sandbox_is_an_importable_module():
    """The runtimes sent to the sandbox are ordinary modules: importable here (and so linted and
    tested), stdlib only at their top, and what their senders read."""
    from stepcode_core.evaluation import check_runtime, cruxeval, reval, reval_tracer
    from stepcode_core.tracing import runner, runtime

    assert runner.RUNTIME_SOURCE == Path(runtime.__file__).read_text()
    assert cruxeval.CHECK_RUNTIME == Path(check_runtime.__file__).read_text()
    assert reval.TRACER_SOURCE == Path(reval_tracer.__file__).read_text()
    for module in (runtime, check_runtime, reval_tracer):
        tree = ast.parse(Path(module.__file__).read_text())
        top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
               for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        assert top <= set(sys.stdlib_module_names) | {"__future__"}, (module.__name__, top)


def test_package_docstring_names_the_stages():
    assert all(stage in stepcode_core.__doc__ for stage in STAGES)
