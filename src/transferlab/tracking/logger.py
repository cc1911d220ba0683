"""Lightning's MLFlowLogger as the training stages use it.

- The x-axis is the epoch (1 = after the first epoch), not the optimizer step, so runs of
  different sizes line up in MLflow's charts (metrics are logged once per epoch anyway).
- No ``epoch`` series (it is the x-axis) and no hyperparameters: ``save_hyperparameters``
  would log the module's arguments a second time under other names; each run's params are
  logged once, by ``transferlab.training.fit``.
- Values are rounded to 6 decimals (float32 noise such as 0.6579999923706055 says nothing).
- ``buffered``: metrics are kept and written in one batch at the end of the fit. For a head on
  cached features, whose epoch takes less than the ~9 ms one sqlite transaction costs; such a
  fit is not resumed (it is faster to redo), so nothing is lost that a resume would need.
- ``resumed``: the run continues a killed fit, which may redo an epoch whose metrics were already
  written; (metric, epoch) pairs the run holds are skipped (a resumed fit is exact, so the values
  are the same), so no epoch appears twice in a chart.
- The run is opened and closed by ``transferlab.tracking.runs``; writes retry a busy sqlite file.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from transferlab.tracking.store import with_retry


class EpochMLflowLogger(MLFlowLogger):
    def __init__(self, *args, buffered: bool = False, resumed: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.buffered = buffered
        self._pending: list = []
        self._written: set[tuple[str, int]] | None = None if resumed else set()

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Not logged here: see the module docstring."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        values = dict(metrics)
        epoch = values.pop("epoch", None)
        step = int(epoch) + 1 if epoch is not None else (step or 0)
        now = int(time.time() * 1000)
        self._pending += [Metric(key, round(float(value), 6), now, step) for key, value in values.items()]
        if not self.buffered:
            self.flush()

    def _already_written(self) -> set[tuple[str, int]]:
        if self._written is None:
            client = self.experiment
            keys = with_retry(lambda: client.get_run(self.run_id)).data.metrics
            self._written = {
                (key, m.step) for key in keys for m in with_retry(lambda: client.get_metric_history(self.run_id, key))
            }
        return self._written

    @rank_zero_only
    def flush(self) -> None:
        batch, self._pending = self._pending, []
        written = self._already_written()
        batch = [m for m in batch if (m.key, m.step) not in written]
        for start in range(0, len(batch), 1000):  # MLflow's limit per log_batch
            with_retry(lambda: self.experiment.log_batch(run_id=self.run_id, metrics=batch[start : start + 1000]))

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Write what is buffered; the run's status is set by transferlab.tracking.runs."""
        if self.run_id is not None:
            self.flush()

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        """Checkpoints are resumable state, not artifacts (the final model is logged by evaluate)."""
