"""The embedded base model (a real SmolLM2-135M-Instruct) and the transformers rollout engine."""

from __future__ import annotations

import pytest

from stepcode_core.models import (
    SamplingConfig,
    TransformersEngine,
    materialize_embedded_model,
    weights_hash,
)
from stepcode_core.paths import stepcode_home


@pytest.fixture(scope="session")
def embedded_model_dir():
    # Converted once per STEPCODE_HOME (about 30 s), like the pipeline does.
    return materialize_embedded_model(stepcode_home() / "models")


@pytest.mark.slow
def test_embedded_model_is_a_plain_hf_folder(embedded_model_dir):
    assert (embedded_model_dir / "config.json").is_file()
    assert "quantization_config" not in (embedded_model_dir / "config.json").read_text()
    assert weights_hash(embedded_model_dir) == weights_hash(embedded_model_dir)
    assert materialize_embedded_model(embedded_model_dir.parent) == embedded_model_dir  # reused, not redone


@pytest.mark.slow
def test_engine_generates_deterministically_greedy_and_samples(embedded_model_dir):
    engine = TransformersEngine(embedded_model_dir)
    prompts = ["What is 2 + 3? Answer with a number.", "Name a color."]
    greedy = SamplingConfig(max_new_tokens=12, temperature=0.0, batch_size=2)
    first = engine.generate(prompts, greedy)
    assert first == engine.generate(prompts, greedy)
    assert [len(texts) for texts in first] == [1, 1] and all(texts[0].strip() for texts in first)
    seen = []
    sampled = engine.generate(prompts[:1], SamplingConfig(max_new_tokens=12, temperature=1.0, num_samples=3, seed=1),
                              progress=lambda done, total: seen.append((done, total)))
    assert len(sampled[0]) == 3 and seen[-1] == (3, 3)
