"""Training tasks built from a traced program.

* output prediction: given P' and the input, predict each anchor line, then the output;
* input prediction: given P' and the output, predict an input and the anchor lines it causes.

The reference response has each state as ``<state>NAME: value</state>`` in execution order and ends
with ``<answer>...</answer>``; the output answer is the value's repr, the input answer is the call
``f(...)``, as CRUXEval's input mode expects.
"""

from __future__ import annotations

RESPONSE_FORMAT = (
    "Reason step by step. Each time the program prints an anchor line, write that line as "
    "<state>NAME: value</state>, in the order the program prints them. "
    "End with <answer>...</answer>."
)


def call_text(entry_point: str | None, arguments: str) -> str:
    return f"{entry_point or 'f'}({arguments})"


def output_prompt(instrumented_code: str, entry_point: str | None, arguments: str) -> str:
    return (
        "Here is a Python program with print statements (anchors) that show its intermediate states.\n\n"
        f"```python\n{instrumented_code}\n```\n\n"
        f"The program is called as `{call_text(entry_point, arguments)}`. Predict every anchor line it "
        f"prints and the value it returns. {RESPONSE_FORMAT} The answer is the returned value as a Python "
        "literal."
    )


def input_prompt(instrumented_code: str, entry_point: str | None, output: str) -> str:
    name = entry_point or "f"
    return (
        "Here is a Python program with print statements (anchors) that show its intermediate states.\n\n"
        f"```python\n{instrumented_code}\n```\n\n"
        f"Find an input such that `{name}(...)` returns `{output}`. Predict the anchor lines the program "
        f"prints for your input. {RESPONSE_FORMAT} The answer is the call, `{name}(...)`."
    )


# Compact prompts: the same tasks in about a third of the tokens (the code, the call and a one-line
# format), for models whose every prompt token costs CPU time; the format is then learnt in SFT.
PROMPT_STYLES = ("full", "compact")


def compact_output_prompt(instrumented_code: str, entry_point: str | None, arguments: str) -> str:
    return (f"```python\n{instrumented_code}\n```\nTrace `{call_text(entry_point, arguments)}`: each anchor line as "
            "<state>NAME: value</state>, then <answer>returned value</answer>.")


def compact_input_prompt(instrumented_code: str, entry_point: str | None, output: str) -> str:
    name = entry_point or "f"
    return (f"```python\n{instrumented_code}\n```\nFind x with `{name}(x) == {output}`: each anchor line of "
            f"`{name}(x)` as <state>NAME: value</state>, then <answer>{name}(x)</answer>.")


def prompts(style: str, instrumented_code: str, entry_point: str | None, arguments: str, output: str) -> dict[str, str]:
    """{task kind: prompt} in ``style`` (:data:`PROMPT_STYLES`)."""
    if style == "full":
        return {"output": output_prompt(instrumented_code, entry_point, arguments),
                "input": input_prompt(instrumented_code, entry_point, output)}
    if style == "compact":
        return {"output": compact_output_prompt(instrumented_code, entry_point, arguments),
                "input": compact_input_prompt(instrumented_code, entry_point, output)}
    raise ValueError(f"prompt style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")


def reference_response(steps: list[tuple[str, str]], answer: str) -> str:
    """The ideal response: every state in order, then the answer."""
    states = "\n".join(f"<state>{name}: {value}</state>" for name, value in steps)
    return f"{states}\n<answer>{answer}</answer>" if states else f"<answer>{answer}</answer>"
