"""A lean decode loop for the bf16 rollout copy of a Llama-style policy: what ``generate`` computes
for sampling, with far fewer operations around the weight reads.

Why by hand: measured on SmolLM2-135M (8 sequences, 2 CPU threads), transformers' ``generate`` spends
about 20 of a 52 ms decode step in the weight reads the step needs and the rest in the framework
around them: a growing ``DynamicCache`` concatenated layer by layer, masks rebuilt at each token,
separate query, key and value products, per-token Python in the generation loop. The libraries that decode fast
on a CPU cannot take new weights at every GRPO step: llama.cpp and OpenVINO load weights from a file
or compile them into a graph, vLLM's CPU backend is slower than transformers on a few cores, and a
``torch.compile`` of the step recompiles whenever the weights change with freezing on and loses the
packed weights with it off. So this module keeps transformers' own pieces where they set the numbers
(the model's RMSNorm and linear modules, rotary embedding and ``rotate_half``, the prefill forward,
transformers' logits warpers) and writes only the loop: a preallocated KV cache, the query, key and
value projections fused into one packed matrix product (:func:`~stepcode_core.training.fast_path.packed_linear`),
grouped-query attention without repeating the keys, one boolean mask row per sequence built once.

:func:`lean_decoding` installs it as ``model.generate`` for a block; generation it does not cover
(:func:`covers`: another architecture, beams, penalties, a processor it does not apply, scores asked
back) goes to transformers' ``generate`` unchanged. ``tests/core/test_lean_decode.py`` checks each
sampled token's distribution against the model's own forward and the greedy tokens against ``generate``'s.
"""

from __future__ import annotations

import collections
import contextlib
import functools

import torch

from stepcode_core.training.fast_path import packed_linear

_SAMPLING_KEYS = {"do_sample", "temperature", "top_k", "top_p", "min_p", "max_new_tokens", "pad_token_id",
                  "eos_token_id", "bos_token_id", "disable_compile", "cache_implementation", "max_length",
                  "transformers_version", "_from_model_config"}
# Settings whose value here changes nothing (TRL sets repetition_penalty=1.0 where the default is None).
_NEUTRAL = {"repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
            "eta_cutoff": 0.0, "num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1, "min_new_tokens": 0,
            "min_length": 0, "no_repeat_ngram_size": 0, "use_cache": True}


def _architecture_covered(model) -> bool:
    """A transformers Llama (not wrapped, as PEFT wraps it) with plain linear projections, in eval mode,
    on the CPU."""
    from transformers import LlamaForCausalLM

    if not isinstance(model, LlamaForCausalLM) or model.training or next(model.parameters()).device.type != "cpu":
        return False
    config = model.config
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False) \
            or getattr(config, "hidden_act", None) != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return False
    projections = [module for layer in model.model.layers for module in (
        layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
        layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj)]
    return all(type(module) is torch.nn.Linear for module in projections + [model.lm_head])


def covers(model, generation_config, kwargs: dict) -> bool:
    """Whether the lean loop computes what ``model.generate(**kwargs)`` would: a Llama-style model on
    the CPU, plain sampling or greedy (temperature, top-k, top-p, min-p), ``max_new_tokens`` set, and
    nothing else asked of the generation."""
    if not _architecture_covered(model) or generation_config is None or not generation_config.max_new_tokens:
        return False
    extra = set(kwargs) - {"input_ids", "attention_mask", "cache"}
    if extra or kwargs.get("input_ids") is None or kwargs.get("attention_mask") is None:
        return False
    default = type(generation_config)()
    for key, value in generation_config.to_dict().items():
        if key in _SAMPLING_KEYS or value == getattr(default, key, value) or value == _NEUTRAL.get(key, ...):
            continue
        return False  # beams, penalties, suppressed tokens, scores asked back, ...
    return generation_config.cache_implementation in (None, "dynamic")


def _warpers(config):
    """transformers' own logits warpers for the sampling settings :func:`covers` accepts, in
    ``generate``'s order."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers = LogitsProcessorList()
    if not config.do_sample:
        return warpers
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    if config.min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=1))
    return warpers


class _FusedQKV:
    """One layer's query, key and value weights as one matrix (packed when the layer's are), rebuilt
    when any of the three changed (their version counters move when the rollout copy is refreshed)."""

    def __init__(self):
        self.versions, self.module = None, None

    def get(self, attention, rows: int) -> torch.nn.Linear:
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        versions = tuple(p.weight._version for p in projections)
        if versions != self.versions:
            weight = torch.cat([p.weight for p in projections])
            self.module = torch.nn.Linear(weight.size(1), weight.size(0), bias=False, dtype=weight.dtype)
            self.module.weight.data = weight
            if hasattr(attention.q_proj, "packed_weight"):
                packed_linear(self.module, rows)
            self.versions = versions
        return self.module


def _fused(model) -> list[_FusedQKV]:
    fused = model.__dict__.get("_lean_qkv")
    if fused is None:
        fused = model.__dict__["_lean_qkv"] = [_FusedQKV() for _ in model.model.layers]
    return fused


def _prefill(model, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The prompt but its last token through the model's own forward, as ``generate`` positions it."""
    from transformers import DynamicCache

    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, cache=cache, use_cache=True,
          logits_to_keep=1)
    return cache


@torch.no_grad()
def lean_generate(model, fallback, input_ids=None, attention_mask=None, generation_config=None, cache=None,
                  counts: collections.Counter | None = None, **kwargs):
    """``model.generate(input_ids, attention_mask, generation_config=..., cache=...)`` by the lean loop
    where :func:`covers` says it computes the same, by ``fallback`` (transformers' ``generate``)
    otherwise. ``cache``: the prompts but their last token already prefilled (as
    :func:`~stepcode_core.training.fast_path.sharing_prefill` passes it). ``counts``: adds one to
    ``"lean"`` or ``"generate"``, whichever decoded."""
    config = generation_config if generation_config is not None else model.generation_config
    arguments = {"input_ids": input_ids, "attention_mask": attention_mask, "cache": cache, **kwargs}
    lean = covers(model, config, arguments) and input_ids.size(1) >= 2 and bool(attention_mask[:, -1].all())
    if counts is not None:
        counts["lean" if lean else "generate"] += 1
    if not lean:
        if cache is not None:
            kwargs["cache"] = cache
        return fallback(input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config, **kwargs)
    decoder, text = model.model, model.config.get_text_config(decoder=True)
    rows, prompt = input_ids.shape
    new, prefix = config.max_new_tokens, prompt - 1
    if cache is None:
        cache = _prefill(model, input_ids[:, :-1], attention_mask[:, :-1])
    # The KV cache for the whole generation, the prefilled prefix copied in.
    heads, kv_heads = text.num_attention_heads, text.num_key_value_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    dtype = next(model.parameters()).dtype
    keys = [torch.empty(rows, kv_heads, prefix + new, head_dim, dtype=dtype) for _ in decoder.layers]
    values = [torch.empty_like(k) for k in keys]
    for index, layer in enumerate(cache.layers):
        keys[index][:, :, :prefix] = layer.keys
        values[index][:, :, :prefix] = layer.values
    visible = torch.ones(rows, 1, 1, prefix + new, dtype=torch.bool)  # the key positions each row attends to
    visible[:, 0, 0, :prefix] = attention_mask[:, :-1].bool()
    positions = attention_mask.long().sum(-1, keepdim=True) - 1  # of the last prompt token (left padding)
    eos = torch.as_tensor(config.eos_token_id if config.eos_token_id is not None else [], dtype=torch.long).view(-1)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    warpers, fused = _warpers(config), _fused(model)
    unfinished = torch.ones(rows, dtype=torch.bool)
    tokens, generated = input_ids[:, -1:], []
    groups, scaling = heads // kv_heads, head_dim**-0.5
    for step in range(new):
        length = prefix + step + 1
        hidden = decoder.embed_tokens(tokens)
        cos, sin = decoder.rotary_emb(hidden, positions)  # (rows, 1, head_dim): broadcast over the heads
        for index, layer in enumerate(decoder.layers):
            hidden = hidden + _attention(layer.self_attn, fused[index], layer.input_layernorm(hidden), cos,
                                         sin, keys[index], values[index], visible[..., :length], length, heads,
                                         kv_heads, head_dim, groups, scaling)
            mlp, normed = layer.mlp, layer.post_attention_layernorm(hidden)
            hidden = hidden + mlp.down_proj(mlp.act_fn(mlp.gate_proj(normed)) * mlp.up_proj(normed))
        scores = model.lm_head(decoder.norm(hidden))[:, -1, :].float()
        scores = warpers(input_ids, scores)
        if config.do_sample:
            chosen = torch.multinomial(scores.softmax(-1), num_samples=1).squeeze(1)
        else:
            chosen = scores.argmax(-1)
        chosen = torch.where(unfinished, chosen, pad)
        generated.append(chosen)
        unfinished &= ~torch.isin(chosen, eos)
        if not bool(unfinished.any()):
            break
        tokens, positions = chosen[:, None], positions + 1
    return torch.cat([input_ids, torch.stack(generated, 1)], 1)


def _attention(attention, fused: _FusedQKV, normed, cos, sin, keys, values, visible, length, heads, kv_heads, head_dim,
               groups, scaling):
    """One layer's self-attention for one new token per row; writes the token's key and value at
    ``length - 1``. ``visible``: True at the key positions a row attends to."""
    from transformers.models.llama.modeling_llama import rotate_half

    rows = normed.size(0)
    qkv = fused.get(attention, rows)(normed).view(rows, heads + 2 * kv_heads, head_dim)
    rotated, value = qkv[:, : heads + kv_heads], qkv[:, heads + kv_heads :]
    rotated = rotated * cos + rotate_half(rotated) * sin  # the query's heads and the key's at once
    query, key = rotated.split([heads, kv_heads], dim=1)
    keys[:, :, length - 1] = key
    values[:, :, length - 1] = value
    # Grouped-query attention for one query: the query heads that share a key head become its rows.
    output = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(rows, kv_heads, groups, head_dim), keys[:, :, :length], values[:, :, :length],
        attn_mask=visible, scale=scaling)
    return attention.o_proj(output.reshape(rows, 1, heads * head_dim))


@contextlib.contextmanager
def lean_decoding(model, enabled: bool = True, counts: collections.Counter | None = None):
    """Within the block, ``model.generate`` decodes with :func:`lean_generate` (transformers'
    ``generate`` for what it does not cover); ``counts`` tallies which of the two decoded each call."""
    if not enabled or not _architecture_covered(model):
        yield model
        return
    own = model.__dict__.get("generate")
    model.generate = functools.partial(lean_generate, model, model.generate, counts=counts)
    try:
        yield model
    finally:
        if own is None:
            del model.generate
        else:
            model.generate = own
