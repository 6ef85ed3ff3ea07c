"""The roofline's counts against torch's own FLOP counter on a real Llama forward and backward, and
its bounds by hand on small numbers."""

from __future__ import annotations

import pytest
import torch

from stepcode_core.training.modeling import freeze_lower_layers
from stepcode_core.training.roofline import (
    ModelShape,
    measure_machine,
    ratio_table,
    rollout_bound,
    update_bound,
)


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return LlamaForCausalLM(config), ModelShape.from_config(config)


def _matmul_flops(run) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    counts = counter.get_flop_counts()["Global"]
    return sum(v for k, v in counts.items() if "mm" in str(k))


def _dense(shape: ModelShape, length: int, layers: int) -> float:
    """sequence_flops without its attention term (torch's counter does not see the CPU attention kernel)."""
    return shape.sequence_flops(length, layers) - 2 * layers * shape.heads * shape.head_dim * length * length


def test_shape_and_parameters_match_the_model(llama):
    model, shape = llama
    norms = sum(p.numel() for name, p in model.named_parameters() if "norm" in name)
    assert shape.parameters == sum(p.numel() for p in model.parameters()) - norms
    assert (shape.heads, shape.kv_heads, shape.head_dim, shape.tied) == (4, 2, 16, True)


def test_forward_and_backward_flops_match_torchs_counter(llama):
    model, shape = llama
    ids = torch.randint(0, 1000, (2, 50))
    forward = _matmul_flops(lambda: model(input_ids=ids))
    assert forward == 2 * _dense(shape, 50, 3) + shape.lm_head_flops(100)

    freeze_lower_layers(model, 1)
    try:
        both = _matmul_flops(lambda: model(input_ids=ids).logits.sum().backward())
    finally:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    # backward: the trained layer's weight and input gradients, and the LM head's input gradient
    assert both - forward == 2 * 2 * _dense(shape, 50, 1) + shape.lm_head_flops(100)


def test_bounds_by_hand():
    shape = ModelShape(layers=2, hidden=8, intermediate=16, heads=2, kv_heads=1, head_dim=4, vocab=100)
    assert shape.layer_parameters == 8 * 4 * (4 + 2) + 3 * 8 * 16
    assert shape.parameters == 2 * 576 + 800
    # decoding is bound by bytes when the bandwidth is low: 3 steps each read every weight once
    slow_memory = rollout_bound(shape, [10], [3, 1], gflops=1e6, bandwidth_gbs=1e-6, bytes_per_value=4)
    kv = shape.kv_bytes_per_token(4) * ((10 + 1.5) * 3 + (10 + 0.5) * 1)
    assert slow_memory.bytes == pytest.approx(3 * shape.parameters * 4 + kv)
    assert slow_memory.seconds == pytest.approx(slow_memory.bytes / 1e3)
    # one distinct prompt is prefilled once, however many samples follow it
    assert rollout_bound(shape, [10], [3] * 8, 1, 1, 4).flops > rollout_bound(shape, [10], [3], 1, 1, 4).flops
    fast_memory = rollout_bound(shape, [10], [3, 1], gflops=1e-6, bandwidth_gbs=1e6, bytes_per_value=4)
    assert fast_memory.seconds == pytest.approx(fast_memory.flops / 1e3)
    update = update_bound(shape, [12, 20], scored_tokens=5, trained_layers=1, trained_parameters=1000,
                          gflops=1.0, bandwidth_gbs=1.0)
    flops = (shape.sequence_flops(12) + shape.sequence_flops(20) + shape.lm_head_flops(5)
             + 2 * (shape.sequence_flops(12, 1) + shape.sequence_flops(20, 1)) + shape.lm_head_flops(5))
    assert update.flops == pytest.approx(flops)
    assert update.seconds == pytest.approx(flops / 1e9 + 28 * 1000 / 1e9)


def test_measure_machine_names_it_and_measures_positive_rates():
    machine = measure_machine(gemm_size=256, copy_mb=16, repeats=1)
    assert machine.name and machine.threads >= 1
    assert machine.gemm_gflops["float32"] > 0 and machine.gemm_gflops["bfloat16"] > 0 and machine.bandwidth_gbs > 0
    assert machine.name in machine.describe() and "GB/s" in machine.describe()
    table = ratio_table([("rollout", 6.0, 2.0), ("update", 3.0, 0.0)])
    assert "3.0" in table.splitlines()[1] and "nan" in table.splitlines()[2]
