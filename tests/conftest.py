"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from stepcode_core.paths import SHARED_DATA_VARIABLE, cruxeval_path

# The reference data beside the checkout, unless the caller points elsewhere (scripts/test.sh and the
# Makefile set it too); subprocesses the tests start inherit it.
os.environ.setdefault(SHARED_DATA_VARIABLE, str(Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def local_sandbox():
    """The local (namespaced, forked-worker) sandbox: every test that runs a program goes through it."""
    from sandbox import open_sandbox

    with open_sandbox(backend="local") as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def cruxeval_rows() -> list[dict]:
    path = cruxeval_path()
    if not path.is_file():
        pytest.skip(f"CRUXEval reference data not found at {path} (set STEPCODE_SHARED_DATA)")
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


# ChatML without SmolLM2's default system prompt: the tiny model has no use for it, and under the
# retrained tokenizer it is 64 of a prompt's 145 tokens (measured).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_model(folder, tokenizer_dir, corpus: list[str], *, vocab_size: int = 400, layers: int = 2, hidden: int = 128,
               heads: int = 4, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` (``layers`` decoder layers, ``hidden`` wide, tied
    embeddings), saved with its tokenizer as a Hugging Face folder under ``folder``. The tokenizer is
    ``tokenizer_dir``'s (pre-tokenizer, special tokens) retrained as a ``vocab_size`` BPE on ``corpus``
    (the texts the model will see), with :data:`CHAT_TEMPLATE`: a 49K vocabulary would make the LM
    head most of a CPU step. The model knows nothing, not even the language: SFT has to teach it the
    task. For learning tests and benchmarks where a pretrained model's rollouts do not fit a CPU budget."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir).train_new_from_iterator(corpus, vocab_size=vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)  # the initial weights are a function of the seed
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model():
    """:func:`_tiny_model`: ``tiny_model(folder, tokenizer_dir, corpus, ...)`` saves a tiny random Llama."""
    return _tiny_model
