#!/usr/bin/env bash
# The GPU check: bf16 Bi-Level GRPO steps on one CUDA GPU, no network, no model download, under
# 8 minutes (see scripts/gpu_check.py). Last line: one JSON object. Exits 1 where no CUDA GPU is.
# On a GPU machine: scripts/bootstrap.sh gpu first (torch with CUDA, vllm), then this.
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
exec timeout 480 "$python" scripts/gpu_check.py "$@"
