"""From executed traces to the training dataset: filters, decontamination, stable splits, task rows."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

from stepcode_core.data import tasks
from stepcode_core.data.decontaminate import NgramIndex
from stepcode_core.tracing.anchors import InstrumentedProgram
from stepcode_core.tracing.runner import TracedRun, TraceJob


def shard_of(program_id: str, num_shards: int) -> int:
    """A program's shard, stable across runs and machines."""
    digest = hashlib.sha256(program_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def split_of(program_id: str, val_fraction: float) -> str:
    """``val`` for a stable ``val_fraction`` of programs, by hash of the id; else ``train``."""
    digest = hashlib.sha256(f"split:{program_id}".encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def trace_job(row: dict, program: InstrumentedProgram, repeats: int = 1, check_original: bool = True) -> TraceJob:
    """Run an instrumented-programs row: the call ``entry_point(input)``, or the module as a script.
    Determinism comes from ``run_traces(cross_check=True)`` (a second interpreter and hash seed), or,
    cheaper and blind to hash order, from ``repeats=2`` (twice in one interpreter)."""
    call = tasks.call_text(row["entry_point"], row["input"]) if row.get("entry_point") else None
    return TraceJob(program, call, row.get("output"), repeats=repeats, check_original=check_original)


def trace_record(row: dict, run: TracedRun) -> dict:
    """One row of ``execution_traces``: the trace, and whether a second run agreed with it."""
    trace = run.trace
    return {
        "program_id": row["program_id"],
        "source": row["source"],
        "level": row.get("level"),
        "entry_point": row["entry_point"],
        "code": row["code"],
        "instrumented_code": row["instrumented_code"],
        "policy": row["policy"],
        "input": row["input"],
        "expected_output": row["output"],
        "status": run.status,
        "result": trace.result,
        "error": trace.error,
        "matches_expected": trace.matches_expected,
        "steps": [{"name": s.name, "value": s.value, "line": s.line} for s in trace.steps],
        "anchor_lines": trace.anchor_lines,
        "over_cap": trace.over_cap,
        "complete": trace.complete,
        "deterministic": bool(trace.deterministic),
        "unstable_repr": trace.unstable_repr,
        "nondeterminism": trace.nondeterminism,
        "same_as_original": trace.same_as_original,
        "original_difference": trace.original_difference,
        "program_stdout": trace.program_stdout[:2000],
        "duration_s": run.duration_s,
    }


@dataclass(frozen=True)
class FilterConfig:
    max_anchor_lines: int = 10
    min_anchor_lines: int = 1
    max_prompt_tokens: int = 1024
    contamination_threshold: float = 0.5
    val_fraction: float = 0.1
    prompt_style: str = "full"  # full | compact (tasks.PROMPT_STYLES)

    def __post_init__(self):
        if self.prompt_style not in tasks.PROMPT_STYLES:
            raise ValueError(f"prompt_style must be one of {', '.join(tasks.PROMPT_STYLES)}, got {self.prompt_style!r}")


# Rough token count (words, numbers, single punctuation marks): within ~20% of BPE tokenizers on code.
_TOKEN = re.compile(r"[A-Za-z_]+|\d+|\S")


def approx_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


@dataclass
class DatasetBuild:
    programs: list[dict] = field(default_factory=list)
    tasks: list[dict] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)
    contaminated_by: Counter = field(default_factory=Counter)


def drop_reason(trace: dict, config: FilterConfig, index: NgramIndex | None) -> tuple[str | None, str | None]:
    """Why a traced program is left out, or (None, None) when it is kept; also the benchmark it
    overlaps when contaminated."""
    if trace["instrumented_code"] is None:
        return "instrument_error", None
    if trace["status"] not in ("ok", "error"):
        return "run_failed", None  # timeout, memory, output_limit, killed
    if trace["error"] is not None or trace["status"] != "ok":
        return "exception", None
    if not trace["complete"]:
        return "incomplete", None
    if trace.get("unstable_repr"):  # the runs differ only in printed addresses
        return "unstable_repr", None
    if not trace["deterministic"]:
        return "nondeterministic", None
    if trace.get("same_as_original") is False:  # P' did not return, raise or print what P did
        return "changed_by_anchors", None
    if trace["matches_expected"] is False:
        return "output_mismatch", None
    if trace["anchor_lines"] > config.max_anchor_lines:
        return "over_anchor_cap", None
    if trace["anchor_lines"] < config.min_anchor_lines:
        return "too_few_anchors", None
    prompt = tasks.prompts(config.prompt_style, trace["instrumented_code"], trace["entry_point"], trace["input"],
                           trace["result"] or "")["output"]
    if approx_tokens(prompt) > config.max_prompt_tokens:
        return "prompt_too_long", None
    if index is not None:
        overlap, benchmark = index.overlap(trace["code"])
        if overlap >= config.contamination_threshold:
            return "contaminated", benchmark
    return None, None


def build_trace_dataset(traces: list[dict], config: FilterConfig, index: NgramIndex | None) -> DatasetBuild:
    build = DatasetBuild()
    for trace in traces:
        reason, benchmark = drop_reason(trace, config, index)
        if reason is not None:
            build.drops[reason] += 1
            if benchmark:
                build.contaminated_by[benchmark] += 1
            continue
        split = split_of(trace["program_id"], config.val_fraction)
        output = trace["result"]
        program = {
            "program_id": trace["program_id"],
            "source": trace["source"],
            "level": trace.get("level"),
            "entry_point": trace["entry_point"],
            "code": trace["code"],
            "instrumented_code": trace["instrumented_code"],
            "policy": trace["policy"],
            "input": trace["input"],
            "output": output,
            "steps": trace["steps"],
            "anchor_lines": trace["anchor_lines"],
            "split": split,
        }
        build.programs.append(program)
        if not trace["entry_point"]:
            continue  # a script has no call to predict: it stays a program row, without task rows
        pairs = [(step["name"], step["value"]) for step in trace["steps"]]
        call = tasks.call_text(trace["entry_point"], trace["input"])
        common = {k: program[k] for k in ("program_id", "source", "level", "entry_point", "instrumented_code", "policy", "input",
                                          "output", "steps", "split")}
        prompts = tasks.prompts(config.prompt_style, trace["instrumented_code"], trace["entry_point"], trace["input"],
                                output)
        build.tasks.append({
            **common, "task_id": f"{trace['program_id']}:output", "task": "output", "prompt": prompts["output"],
            "answer": output, "reference": tasks.reference_response(pairs, output),
        })
        build.tasks.append({
            **common, "task_id": f"{trace['program_id']}:input", "task": "input", "prompt": prompts["input"],
            "answer": call, "reference": tasks.reference_response(pairs, call),
        })
    return build
