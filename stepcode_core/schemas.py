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
        pa.field("provenance", pa.string()),  # JSON: where the row came from
    ]
)

ANCHOR_SITE = pa.struct(
    [
        pa.field("name", pa.string()),
        pa.field("line", pa.int32()),  # line of P
        pa.field("instrumented_line", pa.int32()),  # line of P'
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
