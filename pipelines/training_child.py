"""The training process a checkpoint asset launches through Dagster Pipes.

``python -m pipelines.training_child`` (one process) or ``accelerate launch ... -m
pipelines.training_child`` (one per rank; see :mod:`pipelines.launchers`). The parameters come as
Pipes extras: ``phase`` (sft | grpo), ``model_dir``, ``dataset`` (a trace_dataset folder), ``out``
(the artifact folder), ``settings`` (TrainSettings fields), ``sandbox`` (``open_sandbox`` keywords),
``errors_dir`` and, when MLflow is on, ``mlflow`` (:class:`stepcode_core.training.tracking.Tracking`'s
options). Every rank trains; rank 0 alone opens the Pipes message channel, writes the TensorBoard
event files (``out/tensorboard``) and the MLflow run, and reports each logged step as a log line of
the run, the final metadata (a custom message: metrics, held-out numbers, weights hash, timings,
the MLflow run) and a failure's traceback. Any rank that fails leaves the last lines
of its traceback in ``errors_dir`` for the asset's error message.

Only ``dagster-pipes`` is imported from Dagster, so the child is light and ``stepcode_core`` stays free
of Dagster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from dagster_pipes import (
    PipesDefaultContextLoader,
    PipesEnvVarParamsLoader,
    open_dagster_pipes,
)

from sandbox import open_sandbox
from stepcode_core.models import weights_hash
from stepcode_core.training.held_out import evaluate
from stepcode_core.training.phases import run_phase, write_curves
from stepcode_core.training.settings import TrainSettings
from stepcode_core.training.tasks import load_tasks, select_tasks
from stepcode_core.training.tracking import TENSORBOARD_DIR, Tracking

TRACEBACK_LINES = 12  # of a failure, in the run's log and the asset's error


def _extras_without_channel() -> dict:
    """The extras for ranks other than 0: the context is read, the message channel left to rank 0."""
    params = PipesEnvVarParamsLoader().load_context_params()
    with PipesDefaultContextLoader().load_context(params) as data:
        return dict(data.get("extras") or {})


STOPPED = 128 + signal.SIGTERM  # exit status of a rank stopped from outside


def _terminate_cleanly(signum, frame):
    # SIGTERM (a cancelled run, torchrun closing its workers) unwinds the stack, so sandboxes close;
    # a second one (the launcher's and torchrun's both arrive) must not interrupt that.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(STOPPED)


def train(extras: dict, log=None) -> dict:
    """Train one phase as the extras say; on rank 0 also plot, score held-out tasks and return the
    final metadata (other ranks return {})."""
    started = time.perf_counter()
    rank = int(os.environ.get("RANK", "0"))
    settings = TrainSettings().replace(**extras["settings"])
    phase, out = extras["phase"], Path(extras["out"])
    tasks = load_tasks(extras["dataset"], "train")
    # rank 0 alone: the event files and the MLflow run are the run's, not each process's
    tracking = Tracking(out / TENSORBOARD_DIR, extras.get("mlflow"), settings.to_dict()) if rank == 0 else Tracking(None)

    def progress(name: str, step: int, total: int, row: dict) -> None:
        tracking.log(row, step)
        # every step of a short run, about every tenth of a long one (the curves keep them all)
        if log is not None and (total <= 20 or step in (1, total) or step % max(1, total // 10) == 0):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "step" and isinstance(v, float))
            log.info(f"{name} step {step}/{total}: {shown}")

    with contextlib.ExitStack() as stack:
        stack.enter_context(tracking)
        sandbox = None
        if phase == "grpo" or (rank == 0 and settings.eval_tasks):
            sandbox = stack.enter_context(open_sandbox(**_sandbox_options(extras.get("sandbox", {}))))
        loaded = time.perf_counter()
        result = run_phase(phase, extras["model_dir"], tasks, out / "model", settings, sandbox=sandbox,
                           progress=progress)
        trained = time.perf_counter()
        if rank != 0:
            return {}
        _release_training_memory()
        write_curves(result, out, f"{phase} ({settings.name})")
        held_out = {}
        val = select_tasks(load_tasks(extras["dataset"], "val"), settings.tasks, settings.eval_tasks, settings.seed)
        if settings.eval_tasks and val:
            held_out = evaluate(result.checkpoint_dir, val, sandbox, max_tokens=settings.eval_max_tokens,
                                num_samples=settings.eval_num_samples, temperature=settings.eval_temperature,
                                seed=settings.seed, vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
                                # an fp32 run is scored in fp32: bf16 only on the CPUs that have it would
                                # make its held-out numbers depend on the machine
                                cpu_bf16=None if settings.bf16 else False)
            tracking.log(held_out, result.metrics["steps"], "held_out")
            if log is not None:
                log.info(f"{phase}: held-out {held_out}")
    timings = {"start_s": round(loaded - started, 1), "train_s": round(trained - loaded, 1),
               "held_out_s": round(time.perf_counter() - trained, 1)}
    return {"metrics": result.metrics, "held_out": held_out, "weights_hash": weights_hash(out / "model"),
            "settings": settings.to_dict(), "timings": timings, "tensorboard": TENSORBOARD_DIR,
            **({"mlflow": tracking.run} if tracking.run else {})}


def _sandbox_options(options: dict) -> dict:
    """The pool's workers default to this machine's CPUs shared among its ranks (the pod's CPUs,
    not those of the machine that launched it)."""
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return {**options, "workers": options.get("workers") or max(1, (os.cpu_count() or 1) // ranks_here)}


def _release_training_memory() -> None:
    """The trainer is gone once run_sft / run_grpo return, but its cycles hold GPU memory until
    collected; held-out generation (vLLM's start checks free memory) needs it back."""
    import gc

    gc.collect()
    if "torch" in sys.modules and sys.modules["torch"].cuda.is_available():
        sys.modules["torch"].cuda.empty_cache()


def _record_failure(errors_dir: str | None, rank: int) -> str:
    tail = "".join(traceback.format_exc().splitlines(keepends=True)[-TRACEBACK_LINES:])
    if errors_dir:
        with contextlib.suppress(OSError):
            Path(errors_dir).mkdir(parents=True, exist_ok=True)
            (Path(errors_dir) / f"rank{rank}.txt").write_text(tail)
    return tail


def main() -> int:
    signal.signal(signal.SIGTERM, _terminate_cleanly)
    rank = int(os.environ.get("RANK", "0"))
    if rank != 0:
        extras = _extras_without_channel()
        try:
            train(extras)
        except SystemExit as stop:  # stopped from outside: not this rank's failure
            if stop.code != STOPPED:
                _record_failure(extras.get("errors_dir"), rank)
            raise
        except BaseException:
            _record_failure(extras.get("errors_dir"), rank)
            raise
        return 0
    with open_dagster_pipes() as pipes:
        extras = dict(pipes.extras)
        try:
            meta = train(extras, pipes.log)
        except SystemExit as stop:
            if stop.code == STOPPED:
                pipes.log.warning("rank 0 stopped (the run was cancelled, or another rank failed)")
            else:
                pipes.log.error(f"rank 0 failed:\n{_record_failure(extras.get('errors_dir'), rank)}")
            raise
        except BaseException:
            pipes.log.error(f"rank 0 failed:\n{_record_failure(extras.get('errors_dir'), rank)}")
            raise
        pipes.report_custom_message(meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
