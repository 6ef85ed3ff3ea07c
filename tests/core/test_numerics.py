"""The portable kernel path (``portable_kernels``, on in ``tiny-ablation``): the same weights whatever
instruction set the CPU offers. Each run is ``stepcode train sft`` in a process of its own (the kernel
path is chosen once per process); a CPU with fewer instructions is played by the libraries' own
limits (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``ONEDNN_MAX_CPU_ISA``)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stepcode_core.models import materialize_embedded_model, weights_hash
from stepcode_core.paths import stepcode_home
from stepcode_core.training.numerics import PORTABLE_KERNELS
from stepcode_core.training.tiny_task import tiny_task_rows, write_task_dataset

ROOT = Path(__file__).resolve().parents[2]
AVX2_CPU = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, local_sandbox, tiny_model):
    folder = tmp_path_factory.mktemp("numerics")
    rows = tiny_task_rows(136, 1, local_sandbox)
    dataset = write_task_dataset(folder / "dataset", rows[:128], rows[128:])
    corpus = [row["prompt"] + "\n" + row["reference"] for row in rows]
    base = tiny_model(folder / "base", materialize_embedded_model(stepcode_home() / "models"), corpus, seed=0)

    def train(name: str, limits: dict, portable: bool) -> str:
        out = folder / name
        if out.is_dir():  # trained by an earlier test
            return weights_hash(out)
        command = [sys.executable, "-m", "stepcode_core.training", "sft", "--model", str(base),
                   "--dataset", str(dataset), "--out", str(out), "--preset", "tiny-ablation",
                   "--set", "sft_epochs=1", "--set", f"portable_kernels={json.dumps(portable)}"]
        done = subprocess.run(command, env=_env(limits), cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return weights_hash(out)

    train.folder, train.dataset = folder, dataset
    return train


def _env(limits: dict) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in {*PORTABLE_KERNELS, *AVX2_CPU}}, **limits}


def test_portable_kernels_train_the_same_weights_with_fewer_instructions(tiny_run):
    assert tiny_run("portable", {}, True) == tiny_run("portable-avx2", AVX2_CPU, True)


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() != "AVX512", reason="needs a CPU with AVX512 to limit")
def test_without_them_the_instruction_set_changes_the_weights(tiny_run):
    """The switch is what makes the runs agree: off, the AVX512 and AVX2 kernels part ways."""
    assert tiny_run("vectorized", {}, False) != tiny_run("vectorized-avx2", AVX2_CPU, False)


def test_pinning_after_a_kernel_ran_is_refused():
    script = ("import torch; torch.ones(64).exp().sum()\n"
              "from stepcode_core.training.numerics import pin_portable_kernels; pin_portable_kernels()")
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE_KERNELS}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "KernelPathError" in done.stderr and "ATEN_CPU_CAPABILITY=default" in done.stderr


SCORE = """
import json, sys
from stepcode_core.training.numerics import pin_portable_kernels
pin_portable_kernels()
from sandbox import open_sandbox
from stepcode_core.models import SamplingConfig, make_engine
from stepcode_core.training.held_out import evaluate
from stepcode_core.training.tasks import load_tasks
rows = load_tasks(sys.argv[2], "val")
engine = make_engine(sys.argv[1], backend="transformers", cpu_bf16=False)
texts = engine.generate([row["prompt"] for row in rows], SamplingConfig(max_new_tokens=24, temperature=1.0, num_samples=2))
with open_sandbox(backend="local") as sandbox:
    numbers = evaluate(sys.argv[1], rows, sandbox, max_tokens=24, num_samples=2, temperature=1.0, backend="transformers",
                       engine=engine, cpu_bf16=False)
print(json.dumps({"texts": texts, "numbers": numbers}))
"""


def test_held_out_sampling_and_scoring_agree_on_the_portable_path(tiny_run):
    """What the training child does after training, on the pinned path: sample held-out responses in
    fp32 and score them. The same texts and numbers with fewer instructions."""
    tiny_run("portable", {}, True)
    checkpoint = str(tiny_run.folder / "portable")

    def score(limits: dict) -> dict:
        done = subprocess.run([sys.executable, "-c", SCORE, checkpoint, str(tiny_run.dataset)], env=_env(limits),
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    here, fewer = score({}), score(AVX2_CPU)
    assert len(here["texts"]) == 8 and all(len(samples) == 2 for samples in here["texts"])
    assert here == fewer
