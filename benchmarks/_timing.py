"""Shared by the benchmark scripts (run as `python benchmarks/<script>.py`)."""

from __future__ import annotations

import time

import torch
from lightning.pytorch.callbacks import Callback


class EpochTimer(Callback):
    """Wall time of every training epoch (validation included), synchronised on CUDA."""

    def __init__(self):
        self.times: list[float] = []

    def _sync(self, trainer):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_epoch_start(self, trainer, pl_module):
        self._sync(trainer)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self._sync(trainer)
        self.times.append(time.perf_counter() - self._start)
