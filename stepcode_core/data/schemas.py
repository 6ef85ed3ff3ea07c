"""Explicit pyarrow schemas of the datasets, so that any Arrow reader (pandas, DuckDB, HF datasets)
reads them without this package."""

from __future__ import annotations

import pyarrow as pa

RAW_PROGRAMS = pa.schema(
    [
        pa.field("program_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # generator | humaneval | file:<path> | hf:<name>
        pa.field("code", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),  # call arguments: f(<input>)
        pa.field("output", pa.string()),  # expected value's repr, when the source gives one
        pa.field("entry_point", pa.string()),  # the function called; null: run the program as a script
        pa.field("provenance", pa.string()),  # JSON: where the row came from
        pa.field("level", pa.int8()),  # the generator's difficulty level (1-4); null for other sources
    ]
)

ANCHOR_SITE = pa.struct(
    [
        pa.field("name", pa.string()),
        pa.field("line", pa.int32()),  # line of P
        pa.field("instrumented_line", pa.int32()),  # line of P'
        pa.field("in_loop", pa.bool_()),
    ]
)

INSTRUMENTED_PROGRAMS = pa.schema(
    [
        *RAW_PROGRAMS,
        pa.field("policy", pa.string(), nullable=False),
        pa.field("instrumented_code", pa.string()),  # P' as a model reads it; null when it failed
        pa.field("harness_code", pa.string()),  # P' as the sandbox runs it
        pa.field("anchor_sites", pa.list_(ANCHOR_SITE)),
        pa.field("instrument_error", pa.string()),
    ]
)

STEP = pa.struct(
    [
        pa.field("name", pa.string()),  # variable, or "return"
        pa.field("value", pa.string()),  # repr of the value
        pa.field("line", pa.int32()),  # line of the original program
    ]
)

EXECUTION_TRACES = pa.schema(
    [
        pa.field("program_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("level", pa.int8()),  # difficulty level of a generated program; null for other sources
        pa.field("entry_point", pa.string()),
        pa.field("code", pa.string(), nullable=False),
        pa.field("instrumented_code", pa.string()),
        pa.field("policy", pa.string(), nullable=False),  # the anchor policy that made P'
        pa.field("input", pa.string(), nullable=False),
        pa.field("expected_output", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # the sandbox's verdict
        pa.field("result", pa.string()),  # repr of the returned value
        pa.field("error", pa.string()),
        pa.field("matches_expected", pa.bool_()),
        pa.field("steps", pa.list_(STEP)),
        pa.field("anchor_lines", pa.int32()),
        pa.field("over_cap", pa.bool_()),
        pa.field("complete", pa.bool_()),
        pa.field("deterministic", pa.bool_()),  # a second run gave the same trace
        pa.field("unstable_repr", pa.bool_()),  # the runs differ only in a printed memory address
        pa.field("nondeterminism", pa.string()),  # what differed between the two runs, when anything did
        pa.field("same_as_original", pa.bool_()),  # P' returned, raised and printed what P did
        pa.field("original_difference", pa.string()),  # what differed from P, when anything did
        pa.field("program_stdout", pa.string()),
        pa.field("duration_s", pa.float64()),
    ]
)

TRACE_PROGRAMS = pa.schema(
    [
        pa.field("program_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("level", pa.int8()),  # difficulty level of a generated program; null for other sources
        pa.field("entry_point", pa.string()),
        pa.field("code", pa.string(), nullable=False),
        pa.field("instrumented_code", pa.string(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),  # the anchor policy that made P' (paper | dense)
        pa.field("input", pa.string(), nullable=False),
        pa.field("output", pa.string()),
        pa.field("steps", pa.list_(STEP)),
        pa.field("anchor_lines", pa.int32()),
        pa.field("split", pa.string(), nullable=False),  # train | val
    ]
)

TRACE_TASKS = pa.schema(
    [
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("program_id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),  # output | input
        pa.field("source", pa.string(), nullable=False),
        pa.field("level", pa.int8()),  # difficulty level of a generated program; null for other sources
        pa.field("entry_point", pa.string()),
        pa.field("instrumented_code", pa.string(), nullable=False),
        pa.field("policy", pa.string(), nullable=False),  # the anchor policy (a predicted input is traced under it)
        pa.field("input", pa.string(), nullable=False),
        pa.field("output", pa.string()),
        pa.field("steps", pa.list_(STEP)),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),  # output: the value's repr; input: the call f(...)
        pa.field("reference", pa.string(), nullable=False),  # the ideal response: every state in <state> tags, then <answer>
        pa.field("split", pa.string(), nullable=False),
    ]
)
