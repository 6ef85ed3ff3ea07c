"""Data assets: programs in, instrumented programs out (DESIGN §3). Thin bodies over stepcode_core."""


import json
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow as pa

from pipelines.storage import ArtifactRef, ArtifactStore, cached_output, write_parquet
from stepcode_core import schemas
from stepcode_core.anchors import POLICIES, InstrumentationError, instrument
from stepcode_core.generator import generate_programs


class RawProgramsConfig(dg.Config):
    generator_count: int = 200
    generator_seed: int = 0


class InstrumentConfig(dg.Config):
    policy: str = "paper"


def _preview(table: pa.Table, columns: list[str], rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(table.select(columns).slice(0, rows).to_pandas().to_markdown(index=False))


@dg.asset(group_name="data", code_version="raw_programs-v1")
def raw_programs(context: dg.AssetExecutionContext, config: RawProgramsConfig, store: ArtifactStore) -> dg.Output:
    """Programs with an input each, from the built-in generator (the embedded default)."""

    def write(folder: Path) -> dict:
        generated = generate_programs(config.generator_count, config.generator_seed)
        provenance = json.dumps({"generator_seed": config.generator_seed})
        table = pa.Table.from_pylist(
            [
                {"program_id": p.program_id, "source": "generator", "code": p.code, "input": p.input,
                 "output": None, "provenance": provenance}
                for p in generated
            ],
            schema=schemas.RAW_PROGRAMS,
        )
        write_parquet(table, folder / "data.parquet")
        return {"rows": table.num_rows, "sources": dict(Counter(table.column("source").to_pylist()))}

    return cached_output(
        context, store, "raw_programs-v1", config.model_dump(), [], write,
        lambda ref, meta: {
            "rows": meta["rows"],
            "sources": dg.MetadataValue.json(meta["sources"]),
            "preview": _preview(ref.read_table(), ["program_id", "source", "input"]),
        },
    )


@dg.asset(group_name="data", code_version="instrumented_programs-v1")
def instrumented_programs(
    context: dg.AssetExecutionContext, config: InstrumentConfig, store: ArtifactStore, raw_programs: ArtifactRef
) -> dg.Output:
    """P' for every program: execution-trace anchors inserted by the ast rewriter."""
    if config.policy not in POLICIES:
        raise dg.Failure(f"unknown anchor policy {config.policy!r}; choose one of {', '.join(POLICIES)}")

    def write(folder: Path) -> dict:
        rows = raw_programs.read_table().to_pylist()
        for row in rows:
            row["policy"] = config.policy
            try:
                program = instrument(row["code"], policy=config.policy)
            except InstrumentationError as exc:
                row.update(instrumented_code=None, harness_code=None, anchor_sites=[], instrument_error=str(exc))
                continue
            row.update(
                instrumented_code=program.code,
                harness_code=program.harness,
                anchor_sites=[{"name": s.name, "line": s.line, "instrumented_line": s.instrumented_line} for s in program.sites],
                instrument_error=None,
            )
        table = pa.Table.from_pylist(rows, schema=schemas.INSTRUMENTED_PROGRAMS)
        write_parquet(table, folder / "data.parquet")
        sites = [len(row["anchor_sites"]) for row in rows if row["instrument_error"] is None]
        return {
            "rows": len(rows),
            "failed": len(rows) - len(sites),
            "mean_anchor_sites": round(sum(sites) / max(len(sites), 1), 3),
            "anchor_sites_histogram": dict(sorted(Counter(sites).items())),
        }

    return cached_output(
        context, store, "instrumented_programs-v1", config.model_dump(), [raw_programs], write,
        lambda ref, meta: {
            "rows": meta["rows"],
            "failed": meta["failed"],
            "mean_anchor_sites": meta["mean_anchor_sites"],
            "anchor_sites_histogram": dg.MetadataValue.json({str(k): v for k, v in meta["anchor_sites_histogram"].items()}),
            "preview": _preview(ref.read_table(), ["program_id", "instrumented_code"], rows=3),
        },
    )
