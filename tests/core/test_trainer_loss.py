"""The trainer's per-token (B, T) advantages reach TRL's loss: one loss evaluation on a hand-made
batch of two completions, whose per-token gradients must follow the advantages' signs token by token.
TRL documents no hook for (B, T) advantages; this test is what says the subclass still works."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.rewards.verify import Verdict
from stepcode_core.training.trainer import (
    BiLevelGRPOTrainer,
    SandboxReward,
    group_token_advantages,
    per_token,
)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig

    tokenizer = AutoTokenizer.from_pretrained(materialize_embedded_model(stepcode_home() / "models"))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512, tie_word_embeddings=True))
    args = GRPOConfig(output_dir=str(tmp_path_factory.mktemp("grpo")), per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=64, loss_type="dapo", beta=0.0, report_to="none",
                      use_cpu=True, disable_tqdm=True)
    trainer = BiLevelGRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"prompt": "x"}] * 2),
                                 processing_class=tokenizer, reward=SandboxReward(sandbox=None))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test skips
    return trainer


def test_per_token_advantages_drive_the_per_token_gradient(trainer):
    tokenizer = trainer.processing_class
    # one group of two: sample 0 gets both states and the answer right, sample 1 the first state only
    texts = ["<state>y: 7</state><state>z: 14</state><answer>14</answer>",
             "<state>y: 7</state><state>z: 15</state><answer>15</answer>"]
    verdicts = [Verdict([1.0, 1.0], 1.0), Verdict([1.0, 0.0], 0.0)]
    rows = group_token_advantages(verdicts, "bilevel", lam=0.3)
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    width = max(map(len, ids))
    decode = lambda part: tokenizer.decode(part, skip_special_tokens=True)  # noqa: E731
    table = torch.zeros(2, width)
    completion_ids = torch.full((2, width), tokenizer.pad_token_id or 0)
    completion_mask = torch.zeros(2, width, dtype=torch.long)
    for row, (tokens, advantages, text) in enumerate(zip(ids, rows, texts)):
        completion_ids[row, : len(tokens)] = torch.tensor(tokens)
        completion_mask[row, : len(tokens)] = 1
        table[row, : len(tokens)] = torch.as_tensor(per_token(advantages, text, tokens, decode))
    prompt_ids = torch.tensor([tokenizer("f(4)?", add_special_tokens=False)["input_ids"]] * 2)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones_like(prompt_ids), "completion_ids": completion_ids,
              "completion_mask": completion_mask, "advantages": table,
              "num_items_in_batch": completion_mask.sum()}
    assert table.dim() == 2 and (table[0, : len(ids[0])] > 0).all()  # sample 0: every segment better than its peer
    assert (table[1, : len(ids[1])] > 0).any() and (table[1, : len(ids[1])] < 0).any()  # sample 1: mixed

    captured = {}
    original = trainer._get_per_token_logps_and_entropies

    def capture(*args, **kwargs):
        logps, entropies, aux = original(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = capture
    try:
        trainer.model.train()
        loss = trainer._compute_loss(trainer.model, inputs)
        loss.backward()
    finally:
        trainer._get_per_token_logps_and_entropies = original
    grad = captured["logps"].grad
    live = completion_mask.bool()
    # at ratio 1 the surrogate's gradient with respect to a token's log-probability is -A / N
    normalizer = completion_mask.sum().item()
    np.testing.assert_allclose(grad[live].numpy(), (-table[live] / normalizer).numpy(), rtol=1e-5, atol=1e-7)
    assert (grad[~live] == 0).all()  # padding gets no gradient
    assert torch.equal(torch.sign(grad[live]), -torch.sign(table[live]))
