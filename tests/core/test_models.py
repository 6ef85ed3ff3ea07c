"""The embedded base model (a real SmolLM2-135M-Instruct) and the transformers rollout engine."""

from __future__ import annotations

import pytest

from stepcode_core.models import (
    ModelError,
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
    assert materialize_embedded_model(embedded_model_dir.parent) == embedded_model_dir  # reused, not redone


def test_weights_hash_follows_the_weights_and_nothing_else(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    first = weights_hash(tmp_path)
    (tmp_path / "config.json").write_text('{"note": "a changed config is not a changed checkpoint"}')
    assert weights_hash(tmp_path) == first
    (tmp_path / "model.safetensors").write_bytes(b"weightS")
    assert weights_hash(tmp_path) != first
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weight files"):
        weights_hash(tmp_path)


def test_auto_takes_vllm_only_where_a_gpu_is(monkeypatch):
    """One rule for evaluation engines and training rollouts: vLLM when installed and a GPU is present."""
    import stepcode_core.models as models
    from stepcode_core.training.modeling import use_vllm
    from stepcode_core.training.settings import preset

    for installed, gpu, expected in [(True, False, False), (False, True, False), (True, True, True)]:
        monkeypatch.setattr(models, "vllm_available", lambda installed=installed: installed)
        monkeypatch.setattr(models, "_has_cuda", lambda gpu=gpu: gpu)
        assert models.vllm_preferred() is expected
        assert use_vllm(preset("cpu-smoke")) is expected


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
