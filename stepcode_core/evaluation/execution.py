"""Evaluation of a checkpoint on execution prediction (CRUXEval, LiveCodeBench execution): prompts,
generation, answer extraction, then the official-compatible scorer (``cruxeval.score_generations``).
REval's prompts and scoring are in :mod:`stepcode_core.evaluation.reval`, the step-vs-final gap in
:mod:`stepcode_core.evaluation.trace_gap`. Three prompt styles, shared by all three:

* ``direct``: the benchmark's answer-only format, few-shot, answer in ``[ANSWER]`` tags (REval ships
  its own templates, which we use as they are);
* ``cot``: the same with a worked example of step-by-step reasoning before the answer;
* ``anchored``: our trace format (:mod:`stepcode_core.rewards.responses`): the program shown as P' (with anchors, for CRUXEval
  and LiveCodeBench), each intermediate state written as ``<state>NAME: value</state>``, the answer
  in ``<answer>`` tags. For REval the program is shown unchanged (its questions name lines of P) and
  the states precede the ``[ANSWER]`` block.

Every engine with ``generate(prompts, sampling, progress) -> list[list[str]]`` works
(``models.TransformersEngine``, vLLM); scoring runs in the sandbox.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stepcode_core.data import tasks
from stepcode_core.evaluation import cruxeval, livecodebench
from stepcode_core.rewards.responses import parse_response
from stepcode_core.tracing.anchors import InstrumentationError, instrument

STYLES = ("direct", "cot", "anchored")
Progress = Callable[[int, int], None]

# ---------------------------------------------------------------- prompts (CRUXEval, LiveCodeBench)

_OUTPUT_INSTRUCTION = (
    "You are given a Python function and an assertion with an input to the function. Complete the "
    "assertion with a literal (no unsimplified expressions, no function calls) holding the value the "
    "function returns on that input, even if the function looks wrong or incomplete."
)
_INPUT_INSTRUCTION = (
    "You are given a Python function f and an output in the form f(??) == output. Find any input on "
    "which f returns that output. Several inputs may work; give one."
)
_DIRECT_TAIL = " Write nothing else. Put the completed assertion in [ANSWER] and [/ANSWER] tags, as in the examples."
_COT_TAIL = (" Execute the program step by step first, then put the completed assertion in [ANSWER] and "
             "[/ANSWER] tags, as in the examples.")

_OUTPUT_SHOTS = [
    ("def f(xs):\n    return xs[::-1]", "f([3, 1])", "[1, 3]",
     "xs is [3, 1]. Reversing it gives [1, 3], which f returns."),
    ("def f(word):\n    word = word.upper()\n    return word + '!'", "f('ok')", "'OK!'",
     "word starts as 'ok'. upper() makes it 'OK'. Appending '!' gives 'OK!', which f returns."),
]
_INPUT_SHOTS = [
    ("def f(n):\n    return n * 2", "10", "f(5)", "f doubles its argument, so the input is 10 / 2 = 5."),
    ("def f(a, b):\n    return a + b", "'spam'", "f('sp', 'am')",
     "f concatenates its two arguments; 'sp' + 'am' is 'spam'."),
]


def _shot(code: str, question: str, answer: str, thought: str | None) -> str:
    thinking = f"[THOUGHT]\n{thought}\n[/THOUGHT]\n" if thought else ""
    return f"[PYTHON]\n{code}\n{question}\n[/PYTHON]\n{thinking}[ANSWER]\n{answer}\n[/ANSWER]"


def split_call(call: str, function_name: str) -> str | None:
    """The argument text of ``name(args)``; None when ``call`` is not such a call."""
    text = call.strip()
    if text.startswith(function_name + "(") and text.endswith(")"):
        return text[len(function_name) + 1 : -1]
    return None


def execution_prompt(code: str, mode: str, style: str, call: str, output: str, function_name: str = "f") -> str:
    """A CRUXEval-style prompt. ``call`` is the full call (``f(1, 2)``) in output mode; ``output``
    the value's repr in input mode."""
    if mode not in cruxeval.MODES or style not in STYLES:
        raise ValueError(f"mode must be one of {cruxeval.MODES} and style one of {STYLES}, got {mode!r}, {style!r}")
    if style == "anchored":
        return _anchored_prompt(code, mode, call, output, function_name)
    cot = style == "cot"
    if mode == "output":
        shots = [_shot(c, f"assert {q} == ??", f"assert {q} == {a}", t if cot else None) for c, q, a, t in _OUTPUT_SHOTS]
        question = f"assert {call} == ??"
        head = _OUTPUT_INSTRUCTION
    else:
        shots = [_shot(c, f"assert f(??) == {o}", f"assert {a} == {o}", t if cot else None) for c, o, a, t in _INPUT_SHOTS]
        question = f"assert {function_name}(??) == {output}"
        head = _INPUT_INSTRUCTION
    tail = _COT_TAIL if cot else _DIRECT_TAIL
    return "\n\n".join([head + tail, *shots, f"[PYTHON]\n{code}\n{question}\n[/PYTHON]"]) + "\n"


def _anchored_prompt(code: str, mode: str, call: str, output: str, function_name: str) -> str:
    try:
        shown = instrument(code).code
    except InstrumentationError:
        shown = code  # a program the anchor engine cannot rewrite is shown as it is
    if mode == "output":
        arguments = split_call(call, function_name)
        return tasks.output_prompt(shown, function_name, arguments if arguments is not None else call)
    return tasks.input_prompt(shown, function_name, output)


# ---------------------------------------------------------------- answer extraction

_FENCE = re.compile(r"```(?:python)?\s*(.*?)```", re.DOTALL)


def _answer_block(text: str, style: str) -> str:
    if style == "anchored":
        answer = parse_response(text).answer
        if answer is not None:
            return answer
    start = text.rfind("[ANSWER]")
    body = text[start + len("[ANSWER]") :] if start >= 0 else text
    end = body.find("[/ANSWER]")
    body = body[:end] if end >= 0 else body
    fenced = _FENCE.search(body)
    return (fenced.group(1) if fenced else body).strip()


def _first_statement(text: str) -> tuple[str, int]:
    """The first statement of ``text`` (it ends at a newline outside brackets and strings, so a
    multi-line list or a triple-quoted string stays whole) and the index of its first top-level
    ``==`` (-1 if none)."""
    text = text.lstrip()
    depth, quote, equals, index = 0, "", -1, 0
    while index < len(text):
        if quote:
            if len(quote) == 1 and text[index] == "\n":
                quote = ""  # an unterminated one-line string ends with its line
                continue
            if text[index] == "\\":
                index += 2
                continue
            if text.startswith(quote, index):
                index += len(quote)
                quote = ""
                continue
        elif text[index] in "'\"":
            quote = text[index] * 3 if text.startswith(text[index] * 3, index) else text[index]
            index += len(quote)
            continue
        elif text[index] in "([{":
            depth += 1
        elif text[index] in ")]}":
            depth = max(depth - 1, 0)
        elif depth == 0 and text[index] == "\n":
            break
        elif depth == 0 and equals < 0 and text.startswith("==", index):
            equals = index
        index += 1
    return text[:index].rstrip(), equals


def extract_generation(text: object, mode: str, style: str, function_name: str = "f") -> str:
    """The generation the official scorer checks: in output mode the predicted value's text, in
    input mode the call ``f(...)``. Reads ``[ANSWER]`` blocks (or ``<answer>`` for the anchored
    style) holding a bare answer or a whole ``assert ... == ...``; a value may span lines (a
    bracketed literal, a triple-quoted string). Never raises."""
    if not isinstance(text, str):
        return ""
    statement, cut = _first_statement(_answer_block(text, style))
    if statement.startswith("assert "):
        statement, cut = _first_statement(statement[len("assert ") :])
    if mode == "output":
        return statement[cut + 2 :].strip() if cut >= 0 else statement
    call = statement[:cut].strip() if cut >= 0 else statement
    if not call.startswith(function_name + "("):
        call = f"{function_name}({call})"  # a bare argument list
    return call


# ---------------------------------------------------------------- CRUXEval and LiveCodeBench

@dataclass(frozen=True)
class ExecutionItem:
    """One problem of CRUXEval or LiveCodeBench execution: ``call`` is the full call of the function."""

    id: str
    code: str
    call: str
    output: str
    function_name: str = "f"


def cruxeval_items(problems: Sequence[cruxeval.Problem]) -> list[ExecutionItem]:
    return [ExecutionItem(p.id, p.code, f"f({p.input})", p.output) for p in problems]


def livecodebench_items(rows: Sequence[dict]) -> list[ExecutionItem]:
    """LiveCodeBench execution rows (for prompts); their ``input`` is the whole call or only its arguments."""
    items = []
    for row in rows:
        name = row.get("function_name") or "f"
        given = str(row["input"]).strip()
        call = given if split_call(given, name) is not None else f"{name}({given})"
        items.append(ExecutionItem(str(row["id"]), row["code"], call, row["output"], name))
    return items


def evaluate_execution(
    engine,
    items: Sequence[ExecutionItem],
    mode: str,
    style: str,
    sampling,
    sandbox,
    cheat_rule: Callable[[str, str, cruxeval.Problem], bool] = cruxeval.cheats,
    progress: Progress | None = None,
) -> dict:
    """Generate, extract and score (the official scored format, plus ``raw_responses``)."""
    prompts = [execution_prompt(item.code, mode, style, item.call, item.output, item.function_name) for item in items]
    responses = engine.generate(prompts, sampling, progress=progress)
    generations = {
        item.id: [extract_generation(text, mode, style, item.function_name) for text in texts]
        for item, texts in zip(items, responses)
    }
    # The scorer's check is `assert output == generation`; the problem's input only feeds the cheat rule.
    problems = [cruxeval.Problem(item.id, item.code, _input_of(item), item.output) for item in items]
    scored = cruxeval.score_generations(generations, problems, mode, sandbox, cheat_rule=cheat_rule)
    scored["raw_responses"] = {item.id: texts for item, texts in zip(items, responses)}
    scored["prompts"] = {item.id: prompt for item, prompt in zip(items, prompts)}
    return scored


def _input_of(item: ExecutionItem) -> str:
    return split_call(item.call, item.function_name) or item.call  # CRUXEval's cheat rule looks for f(<input>)


def evaluate_livecodebench(engine, rows: Sequence[dict], style: str, sampling, sandbox,
                           progress: Progress | None = None) -> dict:
    """LiveCodeBench code execution: generate, read each answer as LCB does (its
    ``extract_execution_code`` for the ``direct`` and ``cot`` styles, ``<answer>`` for ``anchored``)
    and score as LCB does (:func:`stepcode_core.evaluation.livecodebench.score_generations`)."""
    items = livecodebench_items(rows)
    prompts = [execution_prompt(item.code, "output", style, item.call, item.output, item.function_name) for item in items]
    responses = engine.generate(prompts, sampling, progress=progress)

    def answer(text: str) -> str:
        if style == "anchored":
            return extract_generation(text, "output", style)
        return livecodebench.extract_answer(text, cot=style == "cot")

    generations = {item.id: [answer(text) for text in texts] for item, texts in zip(items, responses)}
    scored = livecodebench.score_generations(generations, rows, sandbox)
    scored["raw_responses"] = {item.id: texts for item, texts in zip(items, responses)}
    scored["prompts"] = {item.id: prompt for item, prompt in zip(items, prompts)}
    return scored
