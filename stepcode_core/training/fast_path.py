"""The changes that make a CPU training step cost what its arithmetic costs, each a switch of
:class:`~stepcode_core.training.settings.TrainSettings` so that ``benchmarks/`` can time them one at a
time against the plain path.

``compact_lm_head`` — TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head``, used by both
``SFTTrainer`` and ``GRPOTrainer``) projects only the positions that carry a label when the device
runs Triton, and *every* position elsewhere, so that a compiling backend (Neuron) sees one tile shape.
A CPU compiles nothing, and there the rule costs the most: the prompt and the padding go through the
49,152-wide projection, forward and backward, although only the response is scored (more than half
of an SFT step on SmolLM2-135M). :func:`compact_lm_head_on_cpu` makes TRL take its own compact branch
on the CPU too, for the block it wraps. Same kernel, same numbers at the scored positions (``tests/core/test_fast_path.py``).
It rebinds one module-level name of TRL, which TRL reads only for that choice; the test fails first
if a TRL upgrade moves it.

``shared_prefill`` — GRPO samples G completions of each prompt, and transformers' ``generate``
prefills the prompt G times. :func:`sharing_prefill` runs the prompt once, repeats its KV cache G
times and lets ``generate`` continue from it (the cache reuse transformers documents), so prefill
costs 1/G. No library does this for ``generate``: vLLM shares prefixes by itself, and TRL's
transformers path has no such option.

``bf16_rollout`` — on a CPU, ``bf16`` means autocast over fp32 weights (the optimizer keeps fp32
masters). Autocast re-casts every weight to bf16 at every decode step, and for weights that require
grad the rollout runs about 1.7x slower than from bf16 weights (SmolLM2-135M, 8 sequences).
:class:`BF16RolloutCopy` keeps a bf16 copy of the policy, refreshed from the trained weights before
each rollout (one cast per step instead of one per token), and generates from it: what a separate
rollout engine (vLLM) does on a GPU. Log-probs agree with the autocast model's to bf16 rounding
(test); the update still runs on the fp32 weights under autocast. Where PyTorch has oneDNN, the
copy's linear layers also keep their weights in oneDNN's packed layout, repacked at each refresh
(:func:`packed_linear`): the bf16 matrix-vector products of a decode step read weights about 1.3x
faster that way, with the same numbers.

``inverse_cdf_sampling`` — transformers' ``generate`` samples each token with ``torch.multinomial``,
which on a CPU draws one exponential variate per vocabulary entry (49,152 for SmolLM2): about 8 ms of
a 70 ms decode step of 8 sequences. :func:`inverse_cdf_sampling` draws one uniform per row and finds
it in the cumulative distribution instead: the same distribution, another random stream (test).
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch


@contextlib.contextmanager
def compact_lm_head_on_cpu(enabled: bool = True):
    """Within the block, TRL's fused LM head projects only the labelled positions on every device."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    if enabled:
        trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def _grouped(input_ids: torch.Tensor, attention_mask: torch.Tensor, group: int) -> bool:
    """Whether the rows come in runs of ``group`` identical prompts (TRL's sampler repeats each
    prompt G times in a row)."""
    rows = input_ids.size(0)
    if group < 2 or rows % group:
        return False
    ids = input_ids.view(rows // group, group, -1)
    mask = attention_mask.view(rows // group, group, -1)
    return bool((ids == ids[:, :1]).all() and (mask == mask[:, :1]).all())


def _needs_plain_generate(model, kwargs: dict) -> bool:
    """Whether ``generate`` must run as asked: a cache given or a cache implementation chosen (generate
    refuses a cache beside it), beams or several sequences per row (the cache's batch would not
    match), assisted decoding."""
    if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
        return True
    if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens"):
        return True
    for config in (kwargs.get("generation_config"), getattr(model, "generation_config", None)):
        if config is None:
            continue
        if getattr(config, "cache_implementation", None) or (getattr(config, "num_beams", 1) or 1) > 1 \
                or (getattr(config, "num_return_sequences", 1) or 1) > 1:
            return True
    return bool(kwargs.get("cache_implementation")) or (kwargs.get("num_beams") or 1) > 1 \
        or (kwargs.get("num_return_sequences") or 1) > 1


def generate_sharing_prefill(model, generate, group: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                             **kwargs):
    """``generate(input_ids, attention_mask, **kwargs)`` where each run of ``group`` identical rows is
    prefilled once: the prompts but their last token go through the model once, the cache is
    repeated ``group`` times, and ``generate`` carries on from it. Rows that are not grouped that way,
    and generation that cannot start from a cache (:func:`_needs_plain_generate`), go through
    ``generate`` unchanged."""
    if _needs_plain_generate(model, kwargs) or input_ids.size(1) < 2 or not _grouped(input_ids, attention_mask, group):
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    from transformers import DynamicCache

    # A PEFT model's generate runs its base model's forward: prefill with that same forward.
    decoder = model.get_base_model() if hasattr(model, "get_base_model") else model
    ids, mask = input_ids[::group, :-1], attention_mask[::group, :-1]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)  # generate's, for left padding
    cache = DynamicCache(config=decoder.config.get_text_config(decoder=True))
    with torch.no_grad():
        decoder(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                logits_to_keep=1)
    cache.batch_repeat_interleave(group)
    return generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache, **kwargs)


@contextlib.contextmanager
def sharing_prefill(model, group: int):
    """Within the block, ``model.generate`` prefills each run of ``group`` identical prompts once."""
    own = model.__dict__.get("generate")  # an instance attribute set by someone else, kept
    model.generate = functools.partial(generate_sharing_prefill, model, model.generate, group)
    try:
        yield model
    finally:
        if own is None:
            del model.generate  # the class's method shows through again
        else:
            model.generate = own


def _inverse_cdf_multinomial(original):
    def multinomial(input, num_samples, replacement=False, *, generator=None, out=None):
        if num_samples != 1 or input.dim() != 2 or out is not None or input.device.type != "cpu":
            return original(input, num_samples, replacement, generator=generator, out=out)
        cumulative = input.float().cumsum(-1)
        uniform = torch.rand(input.size(0), 1, generator=generator) * cumulative[:, -1:]
        # right=True: a token whose probability is 0 (a flat step of the CDF) is never drawn
        return torch.searchsorted(cumulative, uniform, right=True).clamp_(max=input.size(-1) - 1)

    return multinomial


@contextlib.contextmanager
def inverse_cdf_sampling(enabled: bool = True):
    """Within the block, ``torch.multinomial`` of one sample per row of a CPU probability matrix (what
    ``generate`` calls at each token) samples by inverse CDF; every other call is torch's own. No
    library offers a cheaper categorical draw for ``generate``'s loop."""
    original = torch.multinomial
    if enabled:
        torch.multinomial = _inverse_cdf_multinomial(original)
    try:
        yield
    finally:
        torch.multinomial = original


def wants_bf16_rollout(model, bf16: bool) -> bool:
    """Whether a bf16 rollout copy pays: bf16 asked for, the weights in fp32 (autocast, as on a CPU)."""
    parameter = next(model.parameters(), None)
    return bf16 and parameter is not None and parameter.dtype == torch.float32 and parameter.device.type == "cpu"


def _packed_forward(module, inputs: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(inputs, module.packed_weight, module.bias, "none", [None], "")


def packed_linear(module: torch.nn.Linear, rows: int) -> bool:
    """Give a bf16 CPU ``nn.Linear`` its weight in oneDNN's packed layout for ``rows`` input rows and
    a forward that uses it (oneDNN's ``_linear_pointwise``, the kernel PyTorch's compiler emits for
    frozen CPU linears; no public API packs a weight once for eager mode). Call again after the
    weight changes. False, and the module untouched, where this PyTorch has no such kernel."""
    weight = module.weight
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows)
    except (AttributeError, RuntimeError):  # a build without the op, or a CPU oneDNN refuses for bf16
        return False
    module.packed_weight = packed
    module.forward = functools.partial(_packed_forward, module)
    return True


class BF16RolloutCopy:
    """A bf16 copy of a policy for its rollouts: :meth:`generating` refreshes the copy from the
    policy's current weights, then routes ``policy.generate`` to the copy within the block."""

    def __init__(self, pack: bool = True, rows: int = 8):
        self.copy = None
        self.versions: list[int] = []  # the policy's parameters' version counters at the last refresh
        self.pack, self.rows = pack, rows  # rows: the decode batch the packed layout is chosen for

    def refresh(self, policy) -> None:
        """Bring the copy to the policy's weights. After the first call only the parameters that can
        have changed are copied (and their linears repacked): those the optimizer trains (it updates
        only parameters that require grad) and any other modified in place since the last refresh
        (its version counter moved); with the lower layers frozen that is a fraction of the model."""
        with torch.no_grad():
            if self.copy is None:
                self.copy = copy.deepcopy(policy).eval().requires_grad_(False)
                for module in self.copy.modules():
                    # A forward set on the instance (TRL's fused LM head) is a closure over the policy's
                    # own modules: the copy would run the fp32 weights. The class's forward is the copy's.
                    module.__dict__.pop("forward", None)
                for parameter in self.copy.parameters():  # buffers (RoPE's inv_freq) keep their fp32
                    parameter.data = parameter.data.to(torch.bfloat16)
                    parameter.grad = None  # a gradient the policy held is no business of the copy's
                changed = {id(parameter) for parameter in self.copy.parameters()}
            else:
                changed = set()
                for mine, theirs, seen in zip(self.copy.parameters(), policy.parameters(), self.versions, strict=True):
                    if theirs.requires_grad or theirs._version != seen:
                        mine.copy_(theirs)
                        changed.add(id(mine))
                for mine, theirs in zip(self.copy.buffers(), policy.buffers(), strict=True):
                    mine.copy_(theirs)
            self.versions = [parameter._version for parameter in policy.parameters()]
            if self.pack:
                for module in self.copy.modules():
                    if isinstance(module, torch.nn.Linear) and id(module.weight) in changed:
                        packed_linear(module, self.rows)

    @contextlib.contextmanager
    def generating(self, policy):
        """Within the block, ``policy.generate`` generates from the refreshed bf16 copy (looked up at
        call time, so a wrapper put on the copy's ``generate``, as :func:`sharing_prefill`, applies)."""
        self.refresh(policy)
        self.copy.generation_config = policy.generation_config  # one object: what TRL sets on it applies
        own = policy.__dict__.get("generate")
        policy.generate = lambda *args, **kwargs: self.copy.generate(*args, **kwargs)
        try:
            yield self.copy
        finally:
            if own is None:
                del policy.generate
            else:
                policy.generate = own
