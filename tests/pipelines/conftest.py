"""Stand-ins shared by the pipeline tests: a small trace_dataset and tiny random checkpoints."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.resources import SandboxResource
from pipelines.storage import ArtifactRef, ArtifactStore
from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.training.tiny_task import tiny_task_rows


@dg.asset(name="trace_dataset", group_name="data")
def _tiny_trace_dataset(store: ArtifactStore, sandbox: SandboxResource) -> dg.Output:
    """Stands in for the data stages: the small trace task, in trace_dataset's layout."""
    folder = Path(store.root_path()) / "tiny_trace_dataset"
    if not (folder / "tasks" / "val.parquet").is_file():
        (folder / "tasks").mkdir(parents=True, exist_ok=True)
        with sandbox.open() as opened:
            rows = tiny_task_rows(12, 5, opened, kinds=("output", "input"))
        for split, part in (("train", rows[:20]), ("val", rows[20:])):
            pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k not in ("code", "policy")} for r in part]),
                           folder / "tasks" / f"{split}.parquet")
            programs = {r["program_id"]: {"program_id": r["program_id"], "code": r["code"]} for r in part}
            pq.write_table(pa.Table.from_pylist(list(programs.values())), folder / f"{split}.parquet")
    return dg.Output(ArtifactRef("trace_dataset", "tiny", str(folder), "tiny-v1"), data_version=dg.DataVersion("tiny-v1"))


@pytest.fixture(scope="session")
def tiny_trace_dataset():
    return _tiny_trace_dataset


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """``make(folder, seed)``: a randomly initialised one-layer Llama with SmolLM2's tokenizer, saved
    as a Hugging Face folder. Real weights and a real tokenizer, small enough that evaluating it
    costs seconds; the seed decides the weights (and so the checkpoint's hash)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(materialize_embedded_model(stepcode_home() / "models"))

    def make(folder: Path, seed: int) -> Path:
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=8192,
                             tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id)
        LlamaForCausalLM(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return make
