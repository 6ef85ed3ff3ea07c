"""LoRA: train an adapter, merge it, save a plain Hugging Face folder, load it back."""

from __future__ import annotations

import torch

from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.training.settings import preset
from stepcode_core.training.sft import run_sft
from stepcode_core.training.tiny_task import tiny_task_rows


def test_lora_trains_merges_saves_and_reloads(local_sandbox, tmp_path):
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(materialize_embedded_model(stepcode_home() / "models"))
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                        max_position_embeddings=1024, tie_word_embeddings=True))
    base.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    tasks = tiny_task_rows(8, seed=3, sandbox=local_sandbox)
    settings = preset("cpu-smoke", lora=True, lora_rank=4, train_top_layers=0, sft_max_tasks=8, sft_batch_size=4,
                      sft_epochs=2.0, sft_learning_rate=5e-2, sft_max_length=256)
    result = run_sft(tmp_path / "base", tasks, tmp_path / "sft", settings)

    folder = result.checkpoint_dir
    assert not (folder / "adapter_config.json").exists(), "the adapter is merged, not saved beside the base"
    reloaded = AutoModelForCausalLM.from_pretrained(folder)
    before = {k: v for k, v in base.state_dict().items()}
    after = reloaded.state_dict()
    assert set(after) == set(before) and not any("lora" in key for key in after)  # a plain model
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed and all(("proj" in key) for key in changed)  # LoRA changed the linear layers, only those
    ids = tokenizer("x = 1", return_tensors="pt")["input_ids"]
    assert torch.isfinite(reloaded(ids).logits).all()
    assert result.metrics["steps"] >= 2
