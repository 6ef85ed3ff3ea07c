"""Training curves: a callback that keeps one row per logged optimizer step, and their plot."""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

from stepcode_core.training.settings import Progress


class CurvesCallback:
    """A TrainerCallback (built lazily, transformers is heavy) that keeps one dict per logged step
    and reports it to ``progress``."""

    def __new__(cls, phase: str, keys: dict[str, str], progress: Progress | None):
        from transformers import TrainerCallback

        class Callback(TrainerCallback):
            def __init__(self):
                self.rows: list[dict] = []
                self.started = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):
                logs = logs or {}
                if not any(key in logs for key in keys):
                    return
                row = {"step": state.global_step, "elapsed_s": round(time.perf_counter() - self.started, 2)}
                for source, name in keys.items():
                    value = logs.get(source)
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        row[name] = float(value)
                self.rows.append(row)
                if progress is not None:
                    progress(phase, state.global_step, state.max_steps, row)

        return Callback()


def mean_step_seconds(curves: list[dict]) -> float:
    """The mean time from one logged step to the next (the first step's one-off costs left out);
    with a single row, its elapsed time."""
    ends = [row["elapsed_s"] for row in curves]
    gaps = [b - a for a, b in zip(ends, ends[1:])]
    return sum(gaps) / len(gaps) if gaps else (ends[0] if ends else 0.0)


def plot_curves(curves: list[dict], png_path: str | Path, title: str = "training") -> Path:
    """One panel per logged quantity against the optimizer step (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("reward", "step_accuracy", "final_accuracy", "kl", "response_length", "loss", "token_accuracy")
            if any(k in row for row in curves)]
    columns = max(1, min(3, len(keys)))
    rows = max(1, math.ceil(len(keys) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.6 * rows), dpi=100, squeeze=False)
    for axis, key in zip(axes.flat, keys):
        points = [(row["step"], row[key]) for row in curves if key in row]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, color="#4C72B0")
        axis.set_title(key.replace("_", " "))
        axis.set_xlabel("step")
    for axis in list(axes.flat)[len(keys):]:
        axis.axis("off")
    if not keys:
        axes.flat[0].text(0.5, 0.5, "no logged steps", ha="center", va="center")
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path = Path(png_path)
    path.write_bytes(buffer.getvalue())
    return path
