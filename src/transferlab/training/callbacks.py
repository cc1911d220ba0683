"""Lightning callbacks of the training stages: resumable state, epoch history, console lines."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from rich.console import Console

console = Console(stderr=True, highlight=False)
RESUME_FILE = "last.ckpt"


class ResumeState(Checkpoint):
    """The whole training state (weights, optimizer, loops, callbacks, phase, history) after every
    epoch, in ``<state_dir>/last.ckpt``, written atomically (Lightning saves through an fsspec
    transaction: a temporary file moved into place). A ``Checkpoint`` subclass so that Lightning
    calls it after the module's own ``on_train_epoch_end``, when the epoch's history row and
    metrics are complete."""

    def __init__(self, state_dir: Path):
        self.path = state_dir / RESUME_FILE

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


class EpochLines(L.Callback):
    """Plain lines while a cell trains (for logs; a terminal gets a progress bar): an epoch's row of
    the module's history at most every ``every_s`` seconds, and the last epoch's. Printed when the
    next epoch starts, because the module completes an epoch's row after the callbacks' epoch end."""

    def __init__(self, label: str, every_s: float = 10.0):
        self.label, self.every_s = label, every_s
        self._last = time.perf_counter()

    def _print(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rows = getattr(pl_module, "history", None)
        if not trainer.is_global_zero or not rows:
            return
        self._last = time.perf_counter()
        row = rows[-1]
        shown = "  ".join(
            f"{k.replace('_', '/', 1)}={row[k]:.3f}"
            for k in ("train_loss", "train_acc", "val_acc")
            if row.get(k) is not None
        )
        console.print(f"  {self.label}: epoch {row['epoch']}/{trainer.max_epochs}  {shown}", soft_wrap=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if time.perf_counter() - self._last >= self.every_s:
            self._print(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer, pl_module)


class ReportToSearch(L.Callback):
    """A search's trial: after each epoch, its validation accuracy goes to the search
    (``training.search.Reporter``); the fit stops when the search prunes the trial. A non-monitoring
    callback's epoch end runs before the module's, so this epoch's value is the module's latest
    validation result and its history holds the epochs before (a resumed fit reports those again)."""

    def __init__(self, reporter: Any):
        self.reporter = reporter

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = getattr(pl_module, "epoch_val_acc", None)
        if value is None:
            return
        self.reporter.replay([row["val_acc"] for row in getattr(pl_module, "history", [])])
        if self.reporter.report(trainer.current_epoch + 1, value):
            trainer.should_stop = True


def on_terminal() -> bool:
    """Whether the console is a terminal (rich progress bar) rather than a log (plain lines)."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def progress_callbacks(label: str) -> list[L.Callback]:
    if on_terminal():
        from lightning.pytorch.callbacks import RichProgressBar

        return [RichProgressBar(leave=False)]
    return [EpochLines(label)]
