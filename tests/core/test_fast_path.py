"""The fast path changes the cost of a training step, not its numbers: the compact LM head gives the
same log-probabilities and gradients as TRL's all-positions path, a rollout that prefills each
prompt once gives the same tokens as plain ``generate``, greedy and sampled, and the bf16 rollout
copy follows the trained weights and agrees with the autocast policy to bf16 rounding (the real
SmolLM2-135M)."""

from __future__ import annotations

import inspect

import pytest
import torch

from stepcode_core.models import materialize_embedded_model
from stepcode_core.paths import stepcode_home
from stepcode_core.training.fast_path import (
    BF16RolloutCopy,
    compact_lm_head_on_cpu,
    inverse_cdf_sampling,
    sharing_prefill,
    wants_bf16_rollout,
)


@pytest.fixture(scope="module")
def smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = materialize_embedded_model(stepcode_home() / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    return AutoModelForCausalLM.from_pretrained(folder).eval(), tokenizer


def test_trl_still_chooses_the_compact_branch_through_the_name_we_rebind():
    import trl.trainer.utils as trl_utils

    assert "compact = _use_triton(hidden_states.device)" in inspect.getsource(trl_utils.add_fused_lm_head)
    original = trl_utils._use_triton
    with compact_lm_head_on_cpu():
        assert trl_utils._use_triton(torch.device("cpu")) is True
    assert trl_utils._use_triton is original and original(torch.device("cpu")) is False
    with compact_lm_head_on_cpu(enabled=False):
        assert trl_utils._use_triton is original


def test_compact_lm_head_gives_the_same_log_probs_and_gradients():
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=3000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    input_ids = torch.randint(0, 3000, (3, 40))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :7] = 0  # left padding
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    labels[:, :25] = -100  # only the "response" is scored, as SFT's completion-only loss and GRPO do

    def run(compact: bool):
        model.zero_grad(set_to_none=True)
        with compact_lm_head_on_cpu(compact):
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return out, grads

    slow, slow_grads = run(False)
    fast, fast_grads = run(True)
    scored = labels[:, 1:] != -100
    assert scored.sum() == 3 * 15
    for field in ("log_probs", "entropy"):
        a, b = getattr(slow, field), getattr(fast, field)
        assert torch.allclose(a[scored], b[scored], atol=1e-5), field
        assert (b[~scored] == 0).all()  # unscored positions stay zero, as in TRL's branch
    assert torch.equal(slow.is_top1[scored], fast.is_top1[scored])
    assert torch.allclose(slow.loss, fast.loss, atol=1e-6)
    assert len(slow_grads) == len(fast_grads) > 0
    for a, b in zip(slow_grads, fast_grads):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_a_shared_prefill_rollout_gives_the_same_tokens(smollm, sampled):
    from transformers import GenerationConfig

    model, tokenizer = smollm
    prompts = ["def f(x):\n    return x * 2\nWhat does f(3) return?",
               "x = [1, 2, 3]\nfor i in x:\n    print(i * i)\nWhat does this print, line by line?"]
    group = 3
    inputs = tokenizer([p for p in prompts for _ in range(group)], return_tensors="pt", padding=True)
    assert (inputs["attention_mask"] == 0).any()  # left padding is part of the case
    config = GenerationConfig(max_new_tokens=24, do_sample=sampled, temperature=1.0 if sampled else None,
                              pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(7)
    plain = model.generate(**inputs, generation_config=config)
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(k["input_ids"].shape) or forward(*a, **k)
    try:
        torch.manual_seed(7)
        with sharing_prefill(model, group):
            shared = model.generate(**inputs, generation_config=config)
    finally:
        del model.forward
    assert torch.equal(plain, shared)
    assert calls[0] == (len(prompts), inputs["input_ids"].shape[1] - 1)  # each prompt prefilled once
    assert calls[1] == (len(prompts) * group, 1)  # then every row goes on from the cache, one token at a time
    assert "generate" not in model.__dict__  # the class's method is back


def test_rows_that_are_not_grouped_go_through_plain_generate(smollm):
    from transformers import GenerationConfig

    model, tokenizer = smollm
    inputs = tokenizer(["a = 1", "b = 2", "a = 1", "b = 2"], return_tensors="pt", padding=True)
    config = GenerationConfig(max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(k["input_ids"].shape) or forward(*a, **k)
    try:
        with sharing_prefill(model, 2):
            model.generate(**inputs, generation_config=config)
    finally:
        del model.forward
    assert calls[0][0] == 4  # no shared prefill: the runs of 2 are not identical prompts


def test_generation_that_cannot_start_from_a_cache_goes_through_plain_generate(smollm):
    from transformers import GenerationConfig

    model, tokenizer = smollm
    inputs = tokenizer(["a = 1"] * 2, return_tensors="pt", padding=True)
    for options in ({"cache_implementation": "static"}, {"num_return_sequences": 2, "do_sample": True}):
        config = GenerationConfig(max_new_tokens=3, pad_token_id=tokenizer.pad_token_id, **options)
        torch.manual_seed(1)
        plain = model.generate(**inputs, generation_config=config)
        torch.manual_seed(1)
        with sharing_prefill(model, 2):
            shared = model.generate(**inputs, generation_config=config)
        assert torch.equal(plain, shared), options


def test_the_trainer_rollout_prefills_each_prompt_once(smollm, tmp_path):
    """Through BiLevelGRPOTrainer's own rollout (TRL's generate path), not the helper alone."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig

    from stepcode_core.training.trainer import BiLevelGRPOTrainer, SandboxReward

    _, tokenizer = smollm
    model = AutoModelForCausalLM.from_pretrained(tokenizer.name_or_path)  # the trainer patches its model: a copy of its own
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=4, report_to="none", use_cpu=True, disable_tqdm=True)
    prompts = [tokenizer("def f(x):\n    return x")["input_ids"], tokenizer("y = 2")["input_ids"]]
    rows = [ids for ids in prompts for _ in range(2)]
    for shared, first_call in ((True, (2, len(prompts[0]) - 1)), (False, (4, len(prompts[0])))):
        trainer = BiLevelGRPOTrainer(model=model, args=args, train_dataset=Dataset.from_list([{"prompt": "x"}] * 4),
                                     processing_class=tokenizer, reward=SandboxReward(sandbox=None),
                                     shared_prefill=shared, bf16_rollout=False)  # the policy's own forward
        calls = []
        forward = model.forward  # TRL's fused-head forward, an instance attribute
        model.forward = lambda *a, **k: calls.append(tuple(k["input_ids"].shape)) or forward(*a, **k)
        try:
            completions, _ = trainer._generate_single_turn(rows, None, {}, 2)
        finally:
            model.forward = forward
        assert calls[0] == first_call, shared
        assert len(completions) == 4 and all(len(c) >= 1 for c in completions)


def test_the_bf16_rollout_copy_follows_the_policy_and_runs_its_own_weights(smollm):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    _, tokenizer = smollm
    policy = AutoModelForCausalLM.from_pretrained(tokenizer.name_or_path)  # fp32, as a CPU trains it
    add_fused_lm_head(policy)  # TRL's instance-level forward, a closure over the policy's modules
    assert wants_bf16_rollout(policy, bf16=True) and not wants_bf16_rollout(policy, bf16=False)
    inputs = tokenizer(["def f(x):\n    y = x + 1\n    return y", "print(2 * 3)"], return_tensors="pt", padding=True)
    rollout = BF16RolloutCopy()
    rollout.refresh(policy)  # the copy first: a deep copy would take the hook below along
    policy_layers_ran = []
    policy.model.layers[0].register_forward_hook(lambda *_: policy_layers_ran.append(1))
    with rollout.generating(policy) as copy:
        assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
        assert copy.model.rotary_emb.inv_freq.dtype == torch.float32  # RoPE's frequencies stay fp32
        generated = policy.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert generated.shape == (2, inputs["input_ids"].size(1) + 6)
    assert not policy_layers_ran, "the rollout ran the policy's fp32 weights"
    assert "generate" not in policy.__dict__  # the class's generate again

    # The copy's next-token distribution is the autocast policy's up to bf16 rounding.
    del policy.forward  # the plain forward, for logits
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = policy(**inputs).logits.float().log_softmax(-1)
    with torch.no_grad():
        mine = rollout.copy(**inputs).logits.float().log_softmax(-1)
    real = inputs["attention_mask"].bool()
    assert (reference.argmax(-1) == mine.argmax(-1))[real].float().mean() >= 0.9
    assert (reference.exp() - mine.exp()).abs().sum(-1)[real].mean() < 0.1  # total variation x2

    # A training step moves the policy; the next rollout's copy has the new weights.
    with torch.no_grad():
        policy.model.layers[-1].mlp.down_proj.weight.add_(0.01)
    with rollout.generating(policy) as copy:
        assert torch.equal(copy.model.layers[-1].mlp.down_proj.weight,
                           policy.model.layers[-1].mlp.down_proj.weight.to(torch.bfloat16))


def test_the_packed_rollout_copy_computes_what_the_plain_copy_does_after_every_refresh(smollm):
    """oneDNN's packed linear layers (fast_path.packed_linear) change the weights' layout, not the
    numbers; a refresh repacks, so a trained step reaches the packed layers too."""
    from transformers import AutoModelForCausalLM

    _, tokenizer = smollm
    policy = AutoModelForCausalLM.from_pretrained(tokenizer.name_or_path)
    inputs = tokenizer(["def f(x):\n    y = x + 1\n    return y", "print(2 * 3)"], return_tensors="pt", padding=True)
    packed, plain = BF16RolloutCopy(), BF16RolloutCopy(pack=False)

    def logits(rollout):
        rollout.refresh(policy)
        with torch.no_grad():
            return rollout.copy(**inputs).logits

    before = logits(packed)
    if not hasattr(packed.copy.model.layers[0].mlp.down_proj, "packed_weight"):
        pytest.skip("this PyTorch has no oneDNN bf16 linear to pack for")
    assert torch.allclose(before, logits(plain), rtol=0, atol=1e-2)
    assert "forward" not in plain.copy.model.layers[0].mlp.down_proj.__dict__
    with torch.no_grad():
        policy.model.layers[-1].mlp.down_proj.weight.mul_(1.5)
    after = logits(packed)
    assert not torch.allclose(after, before, atol=1e-2)  # the repacked weights, not the first ones
    assert torch.allclose(after, logits(plain), rtol=0, atol=1e-2)


def test_a_refresh_copies_the_trained_and_the_modified_parameters_only(smollm):
    """After the first refresh, the copy takes the parameters that require grad (what the optimizer
    updates, whichever way it writes them) and any other modified in place; a frozen linear nobody
    touched keeps its packed weight."""
    from transformers import AutoModelForCausalLM

    from stepcode_core.training.modeling import freeze_lower_layers

    _, tokenizer = smollm
    policy = AutoModelForCausalLM.from_pretrained(tokenizer.name_or_path)
    freeze_lower_layers(policy, 1)
    rollout = BF16RolloutCopy()
    rollout.refresh(policy)
    frozen, other_frozen = policy.model.layers[0].mlp.up_proj, policy.model.layers[1].mlp.up_proj
    trained = policy.model.layers[-1].mlp.up_proj
    untouched = getattr(rollout.copy.model.layers[1].mlp.up_proj, "packed_weight", None)
    with torch.no_grad():
        trained.weight.data.mul_(1.5)  # through .data, as some optimizers write: no version bump
        frozen.weight.mul_(1.5)  # in place on a frozen parameter: the version counter moves
    rollout.refresh(policy)
    mine = rollout.copy.model.layers
    assert torch.equal(mine[-1].mlp.up_proj.weight, trained.weight.to(torch.bfloat16))
    assert torch.equal(mine[0].mlp.up_proj.weight, frozen.weight.to(torch.bfloat16))
    assert torch.equal(mine[1].mlp.up_proj.weight, other_frozen.weight.to(torch.bfloat16))
    if untouched is not None:
        assert mine[1].mlp.up_proj.packed_weight is untouched  # not repacked
        assert mine[0].mlp.up_proj.packed_weight is not None
        with torch.no_grad():
            x = torch.randn(8, frozen.in_features, dtype=torch.bfloat16)
            assert torch.allclose(mine[0].mlp.up_proj(x), torch.nn.functional.linear(x, mine[0].mlp.up_proj.weight),
                                  rtol=0, atol=1e-2)


def test_inverse_cdf_sampling_draws_from_the_same_distribution():
    """One uniform a row instead of an exponential per entry: the frequencies match the probabilities
    (rows of different shapes, a token of probability 0 never drawn); other calls and the end of the
    block leave torch.multinomial as it was."""
    original = torch.multinomial
    probs = torch.tensor([[0.5, 0.0, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.1, 0.1, 0.6]])
    torch.manual_seed(0)
    with inverse_cdf_sampling():
        assert torch.multinomial is not original
        draws = torch.cat([torch.multinomial(probs, num_samples=1) for _ in range(20_000)], dim=1)
        several = torch.multinomial(probs[0], num_samples=2)  # not one draw a row: torch's own
    assert torch.multinomial is original
    assert draws.shape == (3, 20_000) and draws.dtype == torch.int64
    for row, expected in zip(draws, probs):
        frequencies = torch.bincount(row, minlength=5).float() / row.numel()
        assert torch.allclose(frequencies, expected, atol=0.012), (frequencies, expected)
        assert frequencies[expected == 0].sum() == 0
    assert several.shape == (2,) and set(several.tolist()) <= {0, 2, 3}
    with inverse_cdf_sampling(enabled=False):
        assert torch.multinomial is original


def test_generate_samples_through_the_inverse_cdf(smollm):
    """transformers' generate, sampling, under the block: tokens drawn by the inverse CDF (a different
    random stream than torch's, hence other tokens from the same seed), valid and reproducible."""
    model, tokenizer = smollm
    inputs = tokenizer(["def f(x):\n    return x"], return_tensors="pt")

    def sample(cheap: bool):
        torch.manual_seed(0)
        with inverse_cdf_sampling(cheap), torch.no_grad():
            return model.generate(**inputs, max_new_tokens=12, do_sample=True, top_k=0, top_p=1.0,
                                  pad_token_id=tokenizer.eos_token_id)

    cheap = sample(True)
    assert torch.equal(cheap, sample(True))
    assert not torch.equal(cheap, sample(False))
    assert int(cheap.max()) < model.config.vocab_size
