"""Which backbone stages train in which epoch, and each parameter group's learning rate.

Plain Python, no torch: the policy the LightningModule applies, kept apart so it can be
read (and tested) on its own.

- A frozen backbone never trains; only the head has an optimizer group.
- Otherwise each backbone stage is a group ``backbone.<stage>`` at ``lr * backbone_lr_factor``
  beside ``head`` at ``lr`` (discriminative learning rates).
- Two phases (``head_epochs`` > 0, the textbook's recipe): only the head trains until epoch
  ``head_epochs``, or earlier once val/acc has not improved for ``plateau_patience``
  epochs; then the backbone (or only its top ``unfreeze_top`` stages) joins at its smaller
  rate. Every group exists from the start and a stage that is not training gets factor 0:
  adding groups mid-run breaks DDP's reducer and LR schedulers (Lightning issue 20340).
- All groups follow one cosine decay over the epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class PhasePlan:
    stage_names: list[str]
    epochs: int
    freeze_backbone: bool = False
    head_epochs: int = 0
    plateau_patience: int | None = None
    unfreeze_top: int | None = None
    phase2_from: int = 0  # first epoch of phase 2 (head_epochs, or earlier after a plateau)
    best_val: float = float("-inf")
    epochs_since_best: int = 0

    def __post_init__(self) -> None:  # the values were checked with the config (core.schema.check_phases)
        self.phase2_from = self.head_epochs

    @property
    def two_phase(self) -> bool:
        return not self.freeze_backbone and self.head_epochs > 0

    def phase2_stages(self) -> list[str]:
        if self.freeze_backbone:
            return []
        return self.stage_names[-self.unfreeze_top :] if self.unfreeze_top else list(self.stage_names)

    def training_stages(self, epoch: int) -> list[str]:
        return self.phase2_stages() if epoch >= self.phase2_from else []

    def phase(self, epoch: int) -> int:
        return 2 if epoch >= self.phase2_from else 1

    def cosine(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))

    def lr_factor(self, group: str, epoch: int) -> float:
        """The factor on a group's base learning rate in ``epoch``."""
        if group == "head":
            return self.cosine(epoch)
        return self.cosine(epoch) if group.removeprefix("backbone.") in self.training_stages(epoch) else 0.0

    def observe_val(self, epoch: int, val_acc: float | None) -> None:
        """End phase 1 once val/acc stopped improving for ``plateau_patience`` checks."""
        if self.plateau_patience is None or val_acc is None or self.phase(epoch) == 2:
            return
        if val_acc > self.best_val:
            self.best_val, self.epochs_since_best = val_acc, 0
        else:
            self.epochs_since_best += 1
        if self.epochs_since_best >= self.plateau_patience:
            self.phase2_from = epoch

    def state(self) -> dict:
        return {"phase2_from": self.phase2_from, "best_val": self.best_val, "epochs_since_best": self.epochs_since_best}

    def restore(self, state: dict) -> None:
        self.phase2_from, self.best_val, self.epochs_since_best = (
            state["phase2_from"],
            state["best_val"],
            state["epochs_since_best"],
        )
