"""Where StepCode writes artifacts, and small file helpers. The reference benchmark data has its
own cache: :mod:`stepcode_core.data.reference`."""

from __future__ import annotations

import json
import os
from pathlib import Path


def stepcode_home() -> Path:
    """Root of everything StepCode writes (artifacts, Dagster's instance): $STEPCODE_HOME, else
    ``.stepcode`` in the working directory, never inside the installed package."""
    return Path(os.environ.get("STEPCODE_HOME") or Path.cwd() / ".stepcode").resolve()


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it into place: a crash never
    leaves a half-written file there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list:
    """The JSON value of every non-blank line; ``path:line: not JSON`` for one that is not."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return rows
