"""REval (r-eval/REval, ICSE 2025) scoring: Coverage, State, Path, Output and Incremental Consistency.

Hand-written, because REval ships no library to import: its scorer lives in research scripts bound to
its own tracer and model runner. The rules reproduced here are the ones stated in SEMANTICS.md beside
the data (``shared/data/reval``): ground truth from a line-level ``sys.settrace`` tracer with REval's
merging and snapshot rules, and each kind's answer parsing and comparison.

The programs and the model's answers are untrusted, so everything that runs them — the traced run,
``eval`` of State answers, execution of Output completions — happens inside the sandbox, in
:mod:`stepcode_core.evaluation.reval_tracer`, the prelude of a batch with one item per (program,
input). Coverage and Path answers are
compared here: they are text matched against trusted data.

Runtime: the programs import what the sandbox's package folders hold (both backends mount this
interpreter's site-packages read-only: :func:`sandbox.local.default_site_dirs`): numpy for 5
ClassEval programs, dateutil for State answers of type datetime, and bs4, lxml and gensim for
DREval/117 and /149 (the ``reval`` extra, which ``make test`` installs). Where those are missing the
program cannot load, its questions are reported unavailable and their answers score as wrong.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sandbox import ExecutionRequest
from stepcode_core.evaluation import reval_tracer
from stepcode_core.data.reference import reval_dir

KINDS = ("coverage", "state", "path", "output")
STYLES = ("direct", "cot")  # REval's own templates
PROMPT_STYLES = ("direct", "cot", "anchored")  # what evaluate_reval offers: the templates, or cot plus our states
TRACER_SOURCE = Path(reval_tracer.__file__).read_text(encoding="utf-8")  # the prelude of every REval batch
MEMORY_MB = 2048  # per (program, input): within what either backend's workers accept by default
# points per query for the C,S,P,O patterns REval's Consistency.run rewards (prefixes only)
IC_POINTS = {(1, 1, 1, 1): 1.0, (1, 1, 1, 0): 0.5, (1, 1, 0, 0): 0.25, (1, 0, 0, 0): 0.125}


@dataclass(frozen=True)
class Query:
    lineno: int
    var: str


@dataclass(frozen=True)
class RevalInput:
    input_idx: int
    queries: tuple[Query, ...]
    question: str  # output_pred: the test with ?? holes


@dataclass
class RevalProgram:
    task_id: str
    entry_point: str
    code: str
    inputs: list[str]
    test: str | None
    tasks: list[RevalInput] = field(default_factory=list)

    @property
    def is_classeval(self) -> bool:
        return self.test is not None

    def task(self, input_idx: int) -> RevalInput:
        for item in self.tasks:
            if item.input_idx == input_idx:
                return item
        raise KeyError(f"{self.task_id} has no input_idx {input_idx}")


def default_data_dir() -> Path:
    """REval's files in the reference-data cache (ReferenceDataMissing, naming the fetch command, if absent)."""
    return reval_dir()


def load_reval(data_dir: str | Path | None = None) -> list[RevalProgram]:
    """DREval_data.jsonl joined with DREval_tasks.jsonl, in tasks-file order."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    data_path, tasks_path = data_dir / "DREval_data.jsonl", data_dir / "DREval_tasks.jsonl"
    for path in (data_path, tasks_path):
        if not path.is_file():
            raise FileNotFoundError(f"REval data file not found: {path}")
    data = {}
    for line in data_path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            data[row["task_id"]] = row
    programs = []
    for line in tasks_path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["task_id"] not in data:
            raise ValueError(f"{tasks_path}: {row['task_id']} is not in {data_path}")
        d = data[row["task_id"]]
        program = RevalProgram(d["task_id"], d["entry_point"], d["code"], list(d["inputs"]), d.get("test"))
        for item in row["tasks"]:
            queries = tuple(Query(int(q["lineno"]), str(q["var"])) for q in item["task"])
            program.tasks.append(RevalInput(int(item["input_idx"]), queries, item["output_pred"]))
        programs.append(program)
    return programs


# ---------------------------------------------------------------- prompts

def _invocation(program: RevalProgram, input_idx: int) -> tuple[str, str]:
    if program.is_classeval:
        return program.inputs[input_idx].rstrip("\n"), "the above test code"
    call = f"{program.entry_point}{program.inputs[input_idx]}"
    return call, call


def reval_prompt(kind: str, style: str, program: RevalProgram, input_idx: int, lineno: int | None = None,
                 var: str | None = None, prompts_dir: str | Path | None = None) -> str:
    """The REval prompt for one question, from ``prompts/{style}_{kind}.txt``."""
    if kind not in KINDS or style not in STYLES:
        raise ValueError(f"kind must be one of {KINDS} and style one of {STYLES}, got {kind!r}, {style!r}")
    prompts_dir = Path(prompts_dir) if prompts_dir is not None else default_data_dir() / "prompts"
    template = (prompts_dir / f"{style}_{kind}.txt").read_text(encoding="utf-8")
    invocation, abbr = _invocation(program, input_idx)
    if kind == "output":
        invocation = program.task(input_idx).question
        if program.is_classeval:  # as in the template's class example
            invocation = "# Test code starts here. Only write the completed test code in your answer.\n" + invocation
    fields = {"code": program.code.rstrip("\n"), "invocation": invocation, "invocation_abbr": abbr}
    if kind != "output":
        if lineno is None or (kind == "state" and var is None):
            raise ValueError(f"a {kind} prompt needs lineno{' and var' if kind == 'state' else ''}")
        fields.update(line=lineno, codeline=program.code.split("\n")[lineno - 1], var=var or "")
    for key, value in fields.items():
        template = template.replace("{" + key + "}", str(value))
    return template


# ---------------------------------------------------------------- answer extraction and text scoring

def extract_answer(response: str) -> str:
    """The text inside ``[ANSWER]``...``[/ANSWER]``. A response that continues a prompt ending in
    ``[ANSWER]`` may lack the opening tag (then: the text before ``[/ANSWER]``); without tags, the
    whole response."""
    start = response.find("[ANSWER]")
    body = response[start + len("[ANSWER]"):] if start >= 0 else response
    end = body.find("[/ANSWER]")
    return (body[:end] if end >= 0 else body).strip()


def coverage_correct(answer: str, executed: bool) -> bool:
    """REval: uppercase, first 3 characters; exactly one of YES/NO there, else the answer is NO."""
    head = answer.upper()[:3]
    said_yes = "YES" in head and "NO" not in head
    return said_yes == executed


def path_correct(answer: str, truth: Sequence[int], code: str) -> bool:
    """REval: the first line of the answer, stripped; ``-1`` or source text matched against every
    source line whose strip() is equal (identical lines are interchangeable)."""
    lines = answer.strip().split("\n")
    first = lines[0].strip() if lines else ""
    if not first:
        return False
    if first == "-1":
        return -1 in truth  # not executed, or an execution that ended the run
    matched = [i + 1 for i, line in enumerate(code.split("\n")) if line.strip() == first]
    return any(n in truth for n in matched)


def _holes(snippet: str) -> list[str]:
    """ClassEval: the argument texts the Output question hides — of each top-level ``assertX`` call
    of the test snippet, the 2nd positional argument, or the only one."""
    holes = []
    for stmt in ast.parse(snippet).body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id.startswith("assert")
                and call.args):
            holes.append(ast.get_source_segment(snippet, call.args[1] if len(call.args) >= 2 else call.args[0]))
    return holes


def reference_completion(program: RevalProgram, input_idx: int, value_repr: str | None = None) -> str:
    """The Output answer REval's reference holds: the question with its ``??`` filled — by
    ``value_repr`` (``repr(f(*input))``, HumanEval) or by the original texts from the test (ClassEval)."""
    question = program.task(input_idx).question
    fills = [value_repr] if not program.is_classeval else _holes(program.inputs[input_idx])
    if any(f is None for f in fills) or question.count("??") != len(fills):
        raise ValueError(f"{program.task_id} input {input_idx}: {question.count('??')} holes, {len(fills)} fills")
    parts = question.split("??")
    return parts[0] + "".join(fill + rest for fill, rest in zip(fills, parts[1:]))


def ic_points(c: bool, s: bool, p: bool, o: bool) -> float:
    return IC_POINTS.get((int(c), int(s), int(p), int(o)), 0.0)


# ---------------------------------------------------------------- sandbox runs

def _payload(program: RevalProgram, item: RevalInput, *, state_answers=(), completions=(),
             want_accepted=False, want_lines=False) -> dict:
    return {
        "code": program.code, "entry_point": program.entry_point, "test": program.test,
        "input": program.inputs[item.input_idx], "question": item.question,
        "queries": [{"lineno": q.lineno, "var": q.var} for q in item.queries],
        "state_answers": [list(a) for a in state_answers], "completions": list(completions),
        "want_accepted": want_accepted, "want_lines": want_lines,
        "answer_timeout": 5.0,
    }


def _request(payload: dict) -> ExecutionRequest:
    n = len(payload["state_answers"]) + len(payload["completions"])
    return ExecutionRequest(code="main()\n", stdin=json.dumps(payload), timeout_s=min(60 + 6 * n, 3600),
                            memory_mb=MEMORY_MB, output_limit_bytes=64 * 1024 * 1024)


def _report(result) -> dict:
    if result.status != "ok":
        return {"ok": False, "error": f"sandbox status {result.status}: {result.stderr[-500:]}"}
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"no report from the tracer: {result.stderr[-500:]}"}


def run_groups(sandbox, groups: Sequence[tuple[RevalProgram, RevalInput, dict]]) -> list[dict]:
    """One sandbox item per (program, input, options), all in one batch whose prelude is the tracer;
    reports in order. A report has ``ok``; when ok, ``queries`` (per query: covered, path, n_values,
    values [[repr, type]], accepted), ``state`` and ``output`` (verdicts of the sent answers, in order),
    ``value_repr`` (HumanEval return value). A pair whose item fails while it had answers to check is
    checked again with one item for its ground truth and one per answer, so that an answer that ends
    its process or outlasts the limit costs only its own verdict."""
    payloads = [_payload(program, item, **options) for program, item, options in groups]
    reports = [_report(r) for r in sandbox.run_batch([_request(p) for p in payloads], prelude=TRACER_SOURCE)]
    again = [i for i, (report, payload) in enumerate(zip(reports, payloads))
             if not report.get("ok") and (payload["state_answers"] or payload["completions"])]
    if not again:
        return reports
    singles, owners = [], []
    for i in again:
        payload = payloads[i]
        singles.append({**payload, "state_answers": [], "completions": []})
        owners.append((i, None, None))
        for j, answer in enumerate(payload["state_answers"]):
            singles.append({**payload, "state_answers": [answer], "completions": []})
            owners.append((i, "state", j))
        for j, completion in enumerate(payload["completions"]):
            singles.append({**payload, "state_answers": [], "completions": [completion]})
            owners.append((i, "output", j))
    answers = [_report(r) for r in sandbox.run_batch([_request(p) for p in singles], prelude=TRACER_SOURCE)]
    for (i, kind, j), report in zip(owners, answers):
        if kind is None:  # the pair's ground truth; every answer False until its own item says otherwise
            reports[i] = report if not report.get("ok") else {
                **report, "state": [False] * len(payloads[i]["state_answers"]),
                "output": [False] * len(payloads[i]["completions"])}
        elif reports[i].get("ok") and report.get("ok"):
            reports[i][kind][j] = report[kind][0]
    return reports


def ground_truth(sandbox, programs: Iterable[RevalProgram], want_accepted: bool = False) -> dict:
    """{(task_id, input_idx): report} for every (program, input) of the tasks file."""
    groups = [(p, item, {"want_accepted": want_accepted}) for p in programs for item in p.tasks]
    reports = run_groups(sandbox, groups)
    return {(p.task_id, item.input_idx): r for (p, item, _), r in zip(groups, reports)}


# ---------------------------------------------------------------- scoring predictions

class PredictionError(ValueError):
    """A prediction row that cannot be scored (unknown task, bad kind, missing field)."""


def _check_row(index: int, row, programs: dict[str, RevalProgram]) -> tuple[RevalProgram, RevalInput, int | None]:
    where = f"row {index + 1}"
    if not isinstance(row, dict):
        raise PredictionError(f"{where}: not a JSON object")
    for key in ("task_id", "input_idx", "kind", "response"):
        if key not in row:
            raise PredictionError(f"{where}: missing field {key!r}")
    if row["kind"] not in KINDS:
        raise PredictionError(f"{where}: kind must be one of {KINDS}, got {row['kind']!r}")
    if not isinstance(row["response"], str):
        raise PredictionError(f"{where}: response must be a string")
    program = programs.get(row["task_id"])
    if program is None:
        raise PredictionError(f"{where}: unknown task_id {row['task_id']!r}")
    try:
        item = program.task(int(row["input_idx"]))
    except (KeyError, TypeError, ValueError):
        raise PredictionError(f"{where}: {row['task_id']} has no input_idx {row['input_idx']!r}") from None
    if row["kind"] == "output":
        return program, item, None
    for key in ("query_idx", "lineno", "var"):
        if key not in row:
            raise PredictionError(f"{where}: a {row['kind']} row needs {key!r}")
    q = row["query_idx"]
    if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q < len(item.queries):
        raise PredictionError(f"{where}: query_idx {q!r} out of range for {row['task_id']} input {item.input_idx}")
    query = item.queries[q]
    if (int(row["lineno"]), str(row["var"])) != (query.lineno, query.var):
        raise PredictionError(f"{where}: lineno/var {row['lineno']}/{row['var']} do not match query {q} "
                              f"({query.lineno}/{query.var})")
    return program, item, q


def check_rows(rows: Sequence[dict], programs: Sequence[RevalProgram]) -> None:
    """Raise :class:`PredictionError` for the first row that cannot be scored."""
    by_id = {p.task_id: p for p in programs}
    for index, row in enumerate(rows):
        _check_row(index, row, by_id)


def score_predictions(rows: Sequence[dict], programs: Sequence[RevalProgram], sandbox) -> tuple[list[dict], dict]:
    """Score REval prediction rows; returns (rows with ``correct``, summary). The summary holds the
    accuracy per kind (fraction of that kind's rows; None without rows), ``ic`` over every query of
    the (program, input) pairs the rows touch (a missing answer counts as wrong; over the full set
    the denominator is REval's 3152), ``n`` per kind and ``unavailable`` (pairs whose program could
    not run, e.g. a missing module)."""
    by_id = {p.task_id: p for p in programs}
    checked = [_check_row(i, row, by_id) for i, row in enumerate(rows)]
    # one sandbox item per (program, input): the State answers and Output completions travel with it
    group_of: dict[tuple[str, int], int] = {}
    groups: list[tuple[RevalProgram, RevalInput, dict]] = []
    slot: list[int | None] = []
    for row, (program, item, q) in zip(rows, checked):
        key = (program.task_id, item.input_idx)
        if key not in group_of:
            group_of[key] = len(groups)
            groups.append((program, item, {"state_answers": [], "completions": []}))
        options = groups[group_of[key]][2]
        answer = extract_answer(row["response"])
        if row["kind"] == "state":
            slot.append(len(options["state_answers"]))
            options["state_answers"].append([q, answer])
        elif row["kind"] == "output":
            slot.append(len(options["completions"]))
            options["completions"].append(answer)
        else:
            slot.append(None)
    reports = run_groups(sandbox, groups)

    scored = []
    for row, (program, item, q), s in zip(rows, checked, slot):
        key = (program.task_id, item.input_idx)
        report = reports[group_of[key]]
        kind, answer = row["kind"], extract_answer(row["response"])
        if not report.get("ok"):
            correct = False
        elif kind == "coverage":
            correct = coverage_correct(answer, report["queries"][q]["covered"])
        elif kind == "path":
            correct = path_correct(answer, report["queries"][q]["path"], program.code)
        else:
            correct = bool(report[kind][s])
        scored.append({**row, "correct": correct})

    accuracy = {}
    for kind in KINDS:
        marks = [r["correct"] for r in scored if r["kind"] == kind]
        accuracy[kind] = sum(marks) / len(marks) if marks else None
    summary = {**accuracy, "ic": incremental_consistency(scored, programs),
               "n": {kind: sum(r["kind"] == kind for r in scored) for kind in KINDS},
               "unavailable": sorted(f"{k[0]}#{k[1]}: {reports[i].get('error')}" for k, i in group_of.items()
                                     if not reports[i].get("ok"))}
    return scored, summary


def incremental_consistency(scored: Iterable[dict], programs: Sequence[RevalProgram]) -> float | None:
    """REval's Consistency.run over scored rows: per query the points of its C, S, P verdicts and the
    Output verdict of its (program, input), averaged ×100 over every query of the (program, input)
    pairs the rows touch (all 3152 for a full run). A missing answer counts as wrong; with several
    rows for one question, any correct one counts."""
    verdict: dict[tuple, bool] = {}
    for row in scored:
        q = row.get("query_idx") if row["kind"] != "output" else None
        key = (row["task_id"], int(row["input_idx"]), row["kind"], q)
        verdict[key] = verdict.get(key, False) or bool(row["correct"])
    touched = {(k[0], k[1]) for k in verdict}
    points, n_queries = 0.0, 0
    for program in programs:
        for item in program.tasks:
            pair = (program.task_id, item.input_idx)
            if pair not in touched:
                continue
            o = verdict.get((*pair, "output", None), False)
            for q in range(len(item.queries)):
                n_queries += 1
                points += ic_points(*(verdict.get((*pair, k, q), False) for k in ("coverage", "state", "path")), o)
    return 100.0 * points / n_queries if n_queries else None


# ---------------------------------------------------------------- prompts of a whole run, and their scoring

_REVAL_ANCHORED = (
    "\n\nBefore answering, trace the execution: write each intermediate state you pass through as "
    "<state>NAME: value</state>, in execution order. Then give the answer in [ANSWER] and [/ANSWER] tags."
)


def reval_rows(programs: Sequence[RevalProgram], style: str, prompts_dir=None) -> list[dict]:
    """One prediction row (without ``response``) per REval question of ``programs``, with its prompt."""
    if style not in PROMPT_STYLES:
        raise ValueError(f"style must be one of {PROMPT_STYLES}, got {style!r}")
    template_style = "direct" if style == "direct" else "cot"
    rows = []
    for program in programs:
        for item in program.tasks:
            for q, query in enumerate(item.queries):
                for kind in ("coverage", "state", "path"):
                    prompt = reval_prompt(kind, template_style, program, item.input_idx, query.lineno,
                                                query.var, prompts_dir)
                    rows.append({"task_id": program.task_id, "input_idx": item.input_idx, "kind": kind,
                                 "query_idx": q, "lineno": query.lineno, "var": query.var, "prompt": prompt})
            prompt = reval_prompt("output", template_style, program, item.input_idx, prompts_dir=prompts_dir)
            rows.append({"task_id": program.task_id, "input_idx": item.input_idx, "kind": "output", "prompt": prompt})
    if style == "anchored":
        for row in rows:
            row["prompt"] += _REVAL_ANCHORED
    return rows


def evaluate_reval(engine, programs: Sequence[RevalProgram], style: str, sampling, sandbox,
                   progress: Callable[[int, int], None] | None = None) -> tuple[list[dict], dict]:
    """Every question of ``programs``, answered by the engine (first sample) and scored REval's way."""
    rows = reval_rows(programs, style)
    responses = engine.generate([row["prompt"] for row in rows], sampling, progress=progress)
    for row, texts in zip(rows, responses):
        row["response"] = texts[0] if texts else ""
    return score_predictions(rows, programs, sandbox)
