"""Where a training run's numbers go besides ``curves.json``: TensorBoard event files beside the
checkpoint, and an MLflow run when a tracking URI is given.

Both receive the rows :class:`~stepcode_core.training.curves.CurvesCallback` keeps, as they are
logged, under the curves' own names (``train/loss``, ``train/reward``, ``train/rollout_s`` ...),
then the held-out numbers scored after training (``held_out/step_accuracy`` ...) at the last step:
``curves.png``, TensorBoard and MLflow show the same numbers. mlflow is imported only when a
tracking URI is given (an optional extra); TensorBoard's writer is torch's (the ``train`` extra).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

TENSORBOARD_DIR = "tensorboard"  # the event files' folder, beside the checkpoint


class Tracking:
    """A context manager for one training run on the main process: ``log(row, step)`` per logged
    step, ``log(held_out, step, "held_out")`` after; on exit the writer is closed and the MLflow
    run ended (FAILED when the block raised). ``logdir`` None: no event files; ``mlflow`` None or
    without ``tracking_uri``: no MLflow run. ``mlflow`` holds ``tracking_uri``, ``experiment``,
    ``tags`` and ``run_name``; ``params`` (the training settings) become the run's params."""

    def __init__(self, logdir: str | Path | None, mlflow: dict | None = None, params: dict | None = None):
        self.logdir = Path(logdir) if logdir is not None else None
        self.mlflow = mlflow if mlflow and mlflow.get("tracking_uri") else None
        self.params = params or {}
        self._writer = None
        self._client = None
        self.run: dict = {}  # the MLflow run: run_id, experiment_id, tracking_uri, url (http servers)

    def __enter__(self) -> Tracking:
        if self.logdir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.logdir))
            self._writer.add_text("settings", f"```\n{json.dumps(self.params, indent=1)}\n```")
        if self.mlflow is not None:
            self._start_mlflow()
        return self

    def _start_mlflow(self) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        uri, name = self.mlflow["tracking_uri"], self.mlflow.get("experiment") or "stepcode"
        self._client = MlflowClient(tracking_uri=uri)
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(name)
        tags = {key: str(value) for key, value in (self.mlflow.get("tags") or {}).items()}
        run = self._client.create_run(experiment_id, tags=tags, run_name=self.mlflow.get("run_name"))
        run_id = run.info.run_id
        params = [Param(key, str(value)) for key, value in self.params.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self._client.log_batch(run_id, params=params[start:start + 100])
        self.run = {"run_id": run_id, "experiment_id": experiment_id, "experiment": name, "tracking_uri": uri}
        if uri.startswith(("http://", "https://")):
            self.run["url"] = f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def log(self, row: dict, step: int, prefix: str = "train") -> None:
        """Every number of ``row`` but its step, as ``prefix/name`` at ``step``."""
        values = {f"{prefix}/{key}": float(value) for key, value in row.items()
                  if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, step)
        if self._client is not None and values:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client.log_batch(self.run["run_id"], metrics=[Metric(tag, value, now, step) for tag, value in values.items()])

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._client is not None:
            self._client.set_terminated(self.run["run_id"], "FINISHED" if exc_type is None else "FAILED")
