"""The lean decode loop (stepcode_core.training.lean_decode) computes what transformers' ``generate``
computes on the bf16 rollout copy of the real SmolLM2-135M: the same greedy tokens with left padding,
from its own prefill and from a shared one, the same early stops at EOS, sampled tokens from the
same distribution; and it leaves to ``generate`` what it does not cover."""

from __future__ import annotations

import collections

import pytest
import torch

from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.training.fast_path import BF16RolloutCopy, sharing_prefill
from stepcode_core.training.lean_decode import _warpers, covers, lean_decoding


@pytest.fixture(scope="module")
def rollout():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = materialize_embedded_model(stepcode_home() / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    copy = BF16RolloutCopy()  # packed weights where this PyTorch has oneDNN, as the trainer rolls out
    copy.refresh(AutoModelForCausalLM.from_pretrained(folder))
    prompts = ["def f(x):\n    y = x + 1\n    return y\nprint(f(", "xs = [3, 1, 2]\nxs.sort()\nprint("]
    rows = [prompt for prompt in prompts for _ in range(2)]  # two groups of G = 2, prompts of two lengths
    inputs = tokenizer(rows, return_tensors="pt", padding=True)
    assert not inputs["attention_mask"].all()  # left padding is exercised
    return copy.copy, tokenizer, inputs


def _config(tokenizer, **settings):
    from transformers import GenerationConfig

    return GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **settings)


def _both(model, inputs, config, shared_prefill: int = 0):
    with torch.no_grad():
        reference = model.generate(**inputs, generation_config=config)
        with lean_decoding(model):
            assert "generate" in model.__dict__
            if shared_prefill:
                with sharing_prefill(model, shared_prefill):
                    mine = model.generate(**inputs, generation_config=config)
            else:
                mine = model.generate(**inputs, generation_config=config)
    assert "generate" not in model.__dict__  # the class's generate again
    return reference, mine


@pytest.mark.parametrize("shared_prefill", [0, 2])
def test_greedy_tokens_are_generates_with_left_padding(rollout, shared_prefill):
    model, tokenizer, inputs = rollout
    config = _config(tokenizer, max_new_tokens=24, do_sample=False)
    assert covers(model, config, dict(inputs))
    reference, mine = _both(model, inputs, config, shared_prefill)
    assert mine.shape == reference.shape
    assert torch.equal(mine, reference)


def test_rows_stop_at_eos_and_are_padded_as_generate_pads_them(rollout):
    model, tokenizer, inputs = rollout
    prompt = inputs["input_ids"].size(1)
    free = _both(model, inputs, _config(tokenizer, max_new_tokens=12, do_sample=False))[0]
    # an end token that the first group emits early and the second group later or never
    stop = int(free[0, prompt + 2])
    config = _config(tokenizer, max_new_tokens=12, do_sample=False)
    config.eos_token_id = [tokenizer.eos_token_id, stop]
    config.pad_token_id = 0
    reference, mine = _both(model, inputs, config)
    assert torch.equal(mine, reference)
    assert (mine[0, prompt + 3 :] == 0).all()  # padded after its end token


def test_each_sampled_token_comes_from_the_models_own_distribution(rollout, monkeypatch):
    """The distribution the lean loop samples each token from is the one the model's own forward gives
    over the sequence so far, to bf16 rounding (transformers' own ``generate`` differs from that forward
    by 0.03-0.12 in the same L1 distance: incremental and whole-sequence passes round differently),
    and the warpers (top-k, top-p) are transformers' own."""
    model, tokenizer, inputs = rollout
    drawn_from = []
    multinomial = torch.multinomial
    monkeypatch.setattr(torch, "multinomial", lambda probs, *a, **k: drawn_from.append(probs.clone()) or multinomial(probs, *a, **k))
    prompt = inputs["input_ids"].size(1)
    # Top-p's cut is a step: rounding that moves a token across it moves that token's whole mass
    # (seen: 0.275), so the largest distance allowed under truncation is looser than without it.
    for settings, largest in (({"temperature": 1.0, "top_k": 0}, 0.25),
                              ({"temperature": 0.7, "top_k": 20, "top_p": 0.9}, 0.5)):
        config = _config(tokenizer, max_new_tokens=12, do_sample=True, **settings)
        config.eos_token_id = []  # every row runs to the end: each step's rows are all comparable
        drawn_from.clear()
        with torch.no_grad(), lean_decoding(model):
            sequences = model.generate(**inputs, generation_config=config)
        assert len(drawn_from) == sequences.size(1) - prompt == 12
        mask = torch.cat([inputs["attention_mask"], torch.ones(sequences.size(0), 12, dtype=torch.long)], 1)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        with torch.no_grad():
            logits = model(input_ids=sequences, attention_mask=mask, position_ids=positions).logits.float()
        distances = []
        for step, probs in enumerate(drawn_from):
            expected = _warpers(config)(sequences[:, : prompt + step], logits[:, prompt - 1 + step]).softmax(-1)
            distances.append((probs - expected).abs().sum(-1))  # L1: twice the total variation
            if settings["top_k"]:  # the loop samples from what the warpers kept
                assert ((probs > 0).sum(-1) <= settings["top_k"]).all()
        distances = torch.stack(distances)
        assert distances.max() < largest and distances.mean() < 0.1, (settings, distances)


def test_what_it_does_not_cover_goes_to_generate(rollout):
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    model, tokenizer, inputs = rollout
    for settings in ({"repetition_penalty": 1.2}, {"num_beams": 2}, {"output_scores": True, "return_dict_in_generate": True},
                     {"min_new_tokens": 4}, {"no_repeat_ngram_size": 2}):
        config = _config(tokenizer, max_new_tokens=6, do_sample=False, **settings)
        assert not covers(model, config, dict(inputs)), settings
        reference, mine = _both(model, inputs, config)
        if isinstance(reference, torch.Tensor):
            assert torch.equal(mine, reference), settings
        else:
            assert torch.equal(mine.sequences, reference.sequences), settings
    assert not covers(model, GenerationConfig(do_sample=False), dict(inputs))  # no max_new_tokens
    counts = collections.Counter()  # which loop decoded, as the trainer reports it
    with torch.no_grad(), lean_decoding(model, counts=counts):
        model.generate(**inputs, generation_config=_config(tokenizer, max_new_tokens=2, num_beams=2))
        model.generate(**inputs, generation_config=_config(tokenizer, max_new_tokens=2, do_sample=False))
    assert counts == {"generate": 1, "lean": 1}
    biased = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                          attention_bias=True)).eval()
    with lean_decoding(biased):
        assert "generate" not in biased.__dict__  # an architecture the loop does not implement
    from peft import LoraConfig, get_peft_model

    plain = LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100)).eval()
    adapted = get_peft_model(plain, LoraConfig(r=2, target_modules=["q_proj"])).eval()
    with lean_decoding(adapted):
        assert "generate" not in adapted.__dict__  # wrapped projections: generate as it is
    with lean_decoding(plain):
        assert "generate" not in plain.__dict__  # the Llama under the adapter: its q_proj is LoRA's now


def test_the_generation_trl_asks_for_is_covered(rollout, tmp_path):
    """What the GRPO trainer passes to ``generate`` (TRL's generation config, a neutral repetition
    penalty included) goes through the lean loop, not around it."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig

    from stepcode_core.training.trainer import BiLevelGRPOTrainer, SandboxReward

    model, tokenizer, inputs = rollout
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
                      temperature=1.0, top_p=1.0, report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = BiLevelGRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tokenizer.name_or_path), args=args,
                                 train_dataset=Dataset.from_list([{"prompt": "x"}] * 4), processing_class=tokenizer,
                                 reward=SandboxReward(sandbox=None))
    assert covers(model, trainer.generation_config, {**inputs, "cache": None})
