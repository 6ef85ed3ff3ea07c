"""scripts/gpu_check.sh refuses clearly on a machine without a CUDA GPU (one line, exit 1)."""

import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: run scripts/gpu_check.sh itself")
def test_gpu_check_refuses_without_cuda():
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert done.stdout.strip().splitlines() == [
        "gpu_check: no CUDA GPU is present (torch.cuda.is_available() is False); nothing was run"]
