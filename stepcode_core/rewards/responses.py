"""The model's response format and its parser, shared by training and evaluation.

A response is free reasoning text in which each predicted state appears as
``<state>NAME: value</state>`` (in execution order) and which ends with ``<answer>...</answer>``.
The parser never raises: anything it cannot read counts as absent, and an unparseable response
scores 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_STATE = re.compile(r"<state>(.*?)</state>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_NAME_VALUE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s?(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class PredictedState:
    name: str | None  # None when the tag's content is not ``NAME: value``
    value: str
    end: int  # character offset just past ``</state>``: where this state's segment of the response ends


@dataclass
class ParsedResponse:
    states: list[PredictedState] = field(default_factory=list)
    answer: str | None = None  # the last <answer>, stripped

    @property
    def pairs(self) -> list[tuple[str | None, str]]:
        return [(state.name, state.value) for state in self.states]


def parse_response(text: object) -> ParsedResponse:
    """Read the states and the answer out of a response; never raises."""
    if not isinstance(text, str):
        return ParsedResponse()
    states = []
    for found in _STATE.finditer(text):
        content = found.group(1)
        pair = _NAME_VALUE.match(content)
        if pair:
            states.append(PredictedState(pair.group(1), pair.group(2), found.end()))
        else:
            states.append(PredictedState(None, content.strip(), found.end()))
    answers = _ANSWER.findall(text)
    return ParsedResponse(states=states, answer=answers[-1].strip() if answers else None)


def step_of_offsets(parsed: ParsedResponse, offsets: list[int], steps: int) -> list[int]:
    """For each character offset (e.g. where each token starts), the step its segment belongs to.

    Segment ``k`` (0-based) runs from the end of state ``k - 1`` to the end of state ``k``: the
    reasoning that leads to a state, and the state. Everything after the last state (or after the
    ``steps``-th, when the response predicts more states than the trace has) is the final step,
    index ``steps``.
    """
    bounds = [state.end for state in parsed.states[:steps]]
    result = []
    index = 0
    for offset in offsets:
        while index < len(bounds) and offset >= bounds[index]:
            index += 1
        result.append(index if index < len(bounds) else steps)
    return result
