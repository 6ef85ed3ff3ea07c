"""Quiet terminal runs: the ML libraries' progress bars off (``stepcode``'s commands print their own
progress), and for the demo and the ablation their advisory warnings too. Imported by
:mod:`pipelines.cli` before anything that loads tqdm, which reads ``TQDM_DISABLE`` at import; the
training processes a run starts inherit the variables."""

from __future__ import annotations

import os
import warnings

PROGRESS_BARS_OFF = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
WARNINGS_OFF = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}

for _name, _value in PROGRESS_BARS_OFF.items():
    os.environ.setdefault(_name, _value)


def quiet_libraries() -> None:
    """Also silence the libraries' warnings (call before they are imported)."""
    for name, value in WARNINGS_OFF.items():
        os.environ.setdefault(name, value)
    warnings.simplefilter("ignore")
