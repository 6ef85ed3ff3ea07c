"""The generator's difficulty levels: what each level's programs may contain, that they run in the
real sandbox and record their level, that a held-out program never repeats a training one, and the
compact prompts."""

from __future__ import annotations

import ast

import pytest

from stepcode_core.data import sources, tasks
from stepcode_core.data.dataset import FilterConfig
from stepcode_core.data.generator import LEVELS, generate_program, generate_programs
from stepcode_core.tracing.anchors import instrument
from stepcode_core.tracing.runner import TraceJob, run_traces

CONTROL = (ast.If, ast.For, ast.While, ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)


def _body(code: str) -> list[ast.stmt]:
    (function,) = ast.parse(code).body
    return function.body


def _controls(code: str) -> int:
    return sum(isinstance(node, CONTROL) for node in ast.walk(ast.parse(code)))


def test_each_level_has_its_shape():
    for index in range(300):
        one, two, three = (generate_program(0, index, level) for level in (1, 2, 3))
        assert len(_body(one.code)) in (2, 3) and _controls(one.code) == 0  # one or two assignments, the return
        assert isinstance(ast.literal_eval(one.input), (int, str)) and len(one.input) <= 5
        assert len(_body(two.code)) in (3, 4) and _controls(two.code) == 0
        assert _controls(three.code) == 1, three.code  # exactly one branch or loop
        assert (one.level, two.level, three.level) == (1, 2, 3)


def test_level_4_is_the_earlier_generator_and_bad_levels_fail():
    assert generate_programs(20, seed=3) == [generate_program(3, i, 4) for i in range(20)]
    assert all(p.level == 4 for p in generate_programs(20, seed=3))
    with pytest.raises(ValueError, match="levels"):
        generate_programs(5, seed=0, levels=[0, 5])
    with pytest.raises(sources.SourceError, match="levels"):
        sources.from_generator(5, 0, [7])


def test_levels_take_turns_and_programs_never_repeat():
    programs = generate_programs(3000, seed=0, levels=(1, 2))
    assert [p.level for p in programs[:4]] == [1, 2, 1, 2]
    assert len({(p.code, p.input) for p in programs}) == 3000  # level 1's space is small: duplicates are redrawn
    assert programs[:100] == generate_programs(100, seed=0, levels=(1, 2))
    rows = sources.from_generator(6, 0, [1, 2, 3])
    assert [row.level for row in rows] == [1, 2, 3, 1, 2, 3] and rows[0].provenance["level"] == 1


def test_every_level_runs_in_the_sandbox(local_sandbox):
    programs = generate_programs(60, seed=5, levels=LEVELS)
    runs = run_traces([TraceJob(instrument(p.code), f"f({p.input})") for p in programs], local_sandbox)
    failed = [(p.level, p.code) for p, run in zip(programs, runs) if run.status != "ok" or run.trace.error]
    assert len(failed) <= 3, failed  # level 4 may raise now and then (the filters drop it); 1-3 never
    assert all(level == 4 for level, _ in failed)


def test_compact_prompts_are_shorter_and_keep_the_task():
    program = instrument(generate_program(0, 1, 2).code)
    full = tasks.prompts("full", program.code, "f", "3", "7")
    compact = tasks.prompts("compact", program.code, "f", "3", "7")
    for kind in ("output", "input"):
        assert program.code in compact[kind] and len(compact[kind]) < 0.7 * len(full[kind])
        assert "<state>NAME: value</state>" in compact[kind] and "<answer>" in compact[kind]
    assert "`f(3)`" in compact["output"] and "`f(x) == 7`" in compact["input"]
    with pytest.raises(ValueError, match="prompt_style"):
        FilterConfig(prompt_style="tiny")
