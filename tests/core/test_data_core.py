"""stepcode_core's data pieces alone: sources, decontamination, splits, filters, task rows."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepcode_core.data import sources, tasks
from stepcode_core.data.dataset import (
    FilterConfig,
    build_trace_dataset,
    drop_reason,
    shard_of,
    split_of,
)
from stepcode_core.data.decontaminate import NgramIndex
from stepcode_core.data.generator import generate_program, generate_programs


def test_generator_is_seeded_and_extends():
    assert generate_programs(30, seed=1) == generate_programs(30, seed=1)
    assert generate_programs(30, seed=1)[:10] == generate_programs(10, seed=1)
    assert generate_programs(10, seed=1) != generate_programs(10, seed=2)
    program = generate_program(1, 5)
    compile(program.code, "<generated>", "exec")
    assert program.code.startswith("def f(") and program.input
    with pytest.raises(ValueError):
        generate_programs(-1)


def test_humaneval_source_takes_calls_from_the_tests():
    programs = sources.from_humaneval()
    assert len({p.provenance["task_id"] for p in programs}) >= 150
    first = next(p for p in programs if p.program_id == "HumanEval/0#0")
    assert first.entry_point == "has_close_elements"
    assert first.input == "[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3" and first.output == "True"


def test_file_sources(tmp_path):
    rows = [{"id": "a", "code": "def f(x):\n    return x\n", "input": "1", "output": "1", "entry_point": None},
            {"id": None, "code": "def g(x):\n    return x\n", "input": "2", "output": None, "entry_point": "g"}]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    for path in (jsonl, parquet):
        loaded = sources.from_path(path)
        assert [p.program_id for p in loaded] == ["a", f"{path}#1"]
        assert loaded[1].entry_point == "g" and loaded[1].output is None
    scripts = tmp_path / "scripts"
    (scripts / "sub").mkdir(parents=True)
    (scripts / "sub" / "hello.py").write_text("print('hi')\n")
    (script,) = sources.from_path(scripts)
    assert script.entry_point is None and script.program_id == "file:sub/hello.py"


def test_bad_sources_fail_clearly(tmp_path):
    with pytest.raises(sources.SourceError, match="no such file"):
        sources.from_path(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"code": "x = 1"}\n')
    with pytest.raises(sources.SourceError, match="lacks a string 'code' and 'input'"):
        sources.from_path(bad)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(sources.SourceError, match="expected .jsonl, .parquet"):
        sources.from_path(tmp_path / "notes.txt")


def test_huggingface_source_without_network_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    with pytest.raises(sources.SourceError, match="could not load the Hugging Face dataset 'cruxeval-org/cruxeval'"):
        sources.from_huggingface("cruxeval-org/cruxeval")


def test_decontamination_sees_through_reformatting():
    original = "def f(text, value):\n    text_list = list(text)\n    text_list.append(value)\n    return ''.join(text_list)\n"
    reformatted = "def f(text,value):  # copied\n    '''docs'''\n    text_list=list(text)\n\n    text_list.append(value)\n    return ''.join(text_list)"
    unrelated = "def g(n):\n    total = 0\n    while n > 1:\n        n //= 2\n        total += 1\n    return total\n"
    index = NgramIndex()
    index.add("cruxeval", [original])
    assert index.overlap(reformatted) == (1.0, "cruxeval")
    assert index.overlap(unrelated) == (0.0, None)


def test_shards_and_splits_are_stable():
    ids = [f"p{i}" for i in range(2000)]
    assert [shard_of(i, 8) for i in ids] == [shard_of(i, 8) for i in ids]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    assert 0.07 < splits.count("val") / len(ids) < 0.13


def _trace(**overrides) -> dict:
    row = {
        "program_id": "p1", "source": "generator", "entry_point": "f", "code": "def f(x):\n    return x\n",
        "instrumented_code": "def f(x):\n    print(f'return: {x!r}')\n    return x", "policy": "dense", "input": "3",
        "status": "ok", "result": "3", "error": None, "matches_expected": None,
        "steps": [{"name": "return", "value": "3", "line": 2}], "anchor_lines": 1, "over_cap": False,
        "complete": True, "deterministic": True, "unstable_repr": False,
    }
    return {**row, **overrides}


@pytest.mark.parametrize("overrides,reason", [
    ({"instrumented_code": None}, "instrument_error"),
    ({"status": "timeout"}, "run_failed"),
    ({"status": "error", "error": "ValueError: x"}, "exception"),
    ({"complete": False}, "incomplete"),
    ({"deterministic": False}, "nondeterministic"),
    ({"unstable_repr": True}, "unstable_repr"),
    ({"matches_expected": False}, "output_mismatch"),
    ({"anchor_lines": 11}, "over_anchor_cap"),
    ({"anchor_lines": 0, "steps": []}, "too_few_anchors"),
    ({"instrumented_code": "x = 1\n" * 2000}, "prompt_too_long"),
    ({}, None),
])
def test_each_filter_names_its_reason(overrides, reason):
    assert drop_reason(_trace(**overrides), FilterConfig(), None)[0] == reason


def test_dataset_rows_and_task_rows():
    build = build_trace_dataset([_trace(), _trace(program_id="p2", deterministic=False)], FilterConfig(val_fraction=0.0), None)
    assert build.drops == {"nondeterministic": 1}
    (program,) = build.programs
    assert program["split"] == "train" and program["output"] == "3"
    output_task, input_task = build.tasks
    assert output_task["task"] == "output" and output_task["answer"] == "3"
    assert output_task["reference"] == "<state>return: 3</state>\n<answer>3</answer>"
    assert input_task["answer"] == "f(3)" and "returns `3`" in input_task["prompt"]
    assert "`f(3)`" in output_task["prompt"] and tasks.RESPONSE_FORMAT in output_task["prompt"]
    # the policy that made P' travels with the rows (a predicted input is traced under it)
    assert program["policy"] == output_task["policy"] == input_task["policy"] == "dense"


def test_shards_split_every_program_once_into_the_shard_of_its_id():
    import pyarrow as pa

    from stepcode_core.data.shards import rows_hash, split_into_shards

    ids = [f"gen:{i}" for i in range(300)]
    table = pa.table({"program_id": ids, "harness_code": ["pass"] * 300, "entry_point": ["f"] * 300,
                      "input": [str(i) for i in range(300)], "output": ["0"] * 300, "policy": ["paper"] * 300})
    shards = split_into_shards(table, 7)
    assert sorted(pid for shard in shards for pid in shard.column("program_id").to_pylist()) == sorted(ids)
    for index, shard in enumerate(shards):
        assert all(shard_of(pid, 7) == index for pid in shard.column("program_id").to_pylist())
    empty = split_into_shards(table.slice(0, 1), 4)  # shards without a program keep the schema
    assert sum(s.num_rows for s in empty) == 1 and all(s.schema == table.schema for s in empty)
    # A shard's key follows its programs: the same rows hash the same, a changed input does not.
    assert rows_hash(shards[0]) == rows_hash(split_into_shards(table, 7)[0])
    changed = table.set_column(3, "input", pa.array(["x"] * 300))
    assert rows_hash(split_into_shards(changed, 7)[0]) != rows_hash(shards[0])
