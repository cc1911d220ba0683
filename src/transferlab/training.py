"""The LightningModule every training stage uses, and the shared fit() of pretrain/finetune."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferlab import tracking
from transferlab.models import Backbone, Head, TransferNet

# A frozen backbone is in eval mode on purpose (BatchNorm statistics must not move).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

CHECKPOINT_NAME = "model"  # -> model.ckpt (no "=" in the name: MLflow rejects it)
console = Console(stderr=True, highlight=False)


def build_backbone(model_cfg: dict[str, Any], image_size: int) -> Backbone:
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    if kwargs.get("_target_", "").endswith("SmallCNN"):
        kwargs["image_size"] = image_size
    return instantiate(kwargs)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """The metric names every regime reports: <prefix>acc and <prefix>macro_f1."""
    return MetricCollection(
        {"acc": MulticlassAccuracy(num_classes, average="micro"),
         "macro_f1": MulticlassF1Score(num_classes, average="macro")},
        prefix=prefix)


class Classifier(L.LightningModule):
    """A backbone (optionally truncated at ``cut_at`` and frozen) with a new linear head.

    Frozen means weights *and* BatchNorm running statistics: the backbone is put in eval
    mode when built, at the start of fit, and whenever ``train()`` is called (Lightning 2.6
    does not call ``train()`` at fit start; it keeps and restores each submodule's mode).
    The optimizer gets named groups,
    ``head`` at ``lr`` and ``backbone`` at ``lr * backbone_lr_factor`` (absent when frozen).
    """

    def __init__(self, model_cfg: dict[str, Any], num_classes: int, image_size: int, lr: float,
                 weight_decay: float, epochs: int, cut_at: str | None = None, freeze_backbone: bool = False,
                 backbone_lr_factor: float = 1.0, head_dropout: float = 0.0):
        super().__init__()
        self.save_hyperparameters()
        backbone = build_backbone(model_cfg, image_size).truncated(cut_at)
        self.net = TransferNet(backbone, Head(backbone.out_channels, num_classes, head_dropout))
        if freeze_backbone:
            self.net.backbone.requires_grad_(False)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.hparams.freeze_backbone:
            self.net.backbone.eval()
        return self

    def on_train_start(self) -> None:
        self.train()

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Load pretrained weights into the (possibly truncated) backbone; every kept key must be there."""
        own = self.net.backbone.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"pretrained weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        self.net.backbone.load_state_dict({key: state[key] for key in own}, strict=True)

    def _step(self, batch, metrics: MetricCollection, prefix: str) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        loss = nn.functional.cross_entropy(logits, labels)
        metrics.update(logits, labels)
        self.log(f"{prefix}loss", loss, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log_dict(metrics, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_metrics, "train/")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val/")

    def parameter_groups(self) -> list[dict[str, Any]]:
        hp = self.hparams
        groups = [{"name": "head", "params": list(self.net.head.parameters()), "lr": hp.lr}]
        trainable = [p for p in self.net.backbone.parameters() if p.requires_grad]
        if trainable and hp.backbone_lr_factor > 0:
            groups.append({"name": "backbone", "params": trainable, "lr": hp.lr * hp.backbone_lr_factor})
        return groups

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class EpochSummary(Callback):
    """One line per epoch on stderr (DVC logs stay readable without a progress bar)."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        shown = ("train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1")
        values = "  ".join(f"{k}={float(trainer.callback_metrics[k]):.4f}" for k in shown if k in trainer.callback_metrics)
        console.print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  {values}  "
                      f"({time.perf_counter() - self._started:.1f}s)")


def seed_everything(seed: int | None) -> None:
    if seed is not None:  # seed=0 must still seed
        L.seed_everything(seed, workers=True, verbose=False)


def seed_worker_transform(worker_id: int) -> None:
    """Give each DataLoader worker's copy of the augmentation pipeline its own seed.

    torch seeds every worker from the loader's generator (distinct per worker and epoch,
    reproducible when that generator is seeded); without this all workers would draw the
    same augmentations.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None:
        transform.set_random_seed(torch.initial_seed() % 2**32)


def loaders(train_set, val_set, batch_size: int, seed: int | None, num_workers: int = 0) -> tuple[DataLoader, DataLoader]:
    generator = torch.Generator().manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=False, generator=generator,
                       num_workers=num_workers, worker_init_fn=seed_worker_transform,
                       persistent_workers=num_workers > 0)
    val = DataLoader(val_set, batch_size=max(batch_size, 256), shuffle=False)
    return train, val


def fit(cfg: DictConfig, module: Classifier, train_loader: DataLoader, val_loader: DataLoader, out_dir: Path,
        run_name: str, tags: dict[str, str]) -> tuple[Classifier, str]:
    """Train with Lightning, tracked in one MLflow run; returns the best-val module and the run id.

    The best checkpoint (by val/acc) is ``out_dir/model.ckpt``; the run id goes to
    ``out_dir/run.json`` so the evaluation stage logs its test metrics into the same run.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = tracking.start_run(cfg, run_name, tags)
    logger = MLFlowLogger(experiment_name=cfg.tracking.experiment_name, tracking_uri=tracking.tracking_uri(),
                          run_id=run_id)
    checkpoint = ModelCheckpoint(dirpath=out_dir, filename=CHECKPOINT_NAME, monitor="val/acc", mode="max",
                                 save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs.pop("name", None)
    trainer: L.Trainer = instantiate(trainer_kwargs, max_epochs=cfg.train.epochs, logger=logger,
                                     callbacks=[checkpoint, EpochSummary(), LearningRateMonitor("epoch")],
                                     default_root_dir=str(out_dir))
    trainer.fit(module, train_loader, val_loader)
    best = Classifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    if trainer.is_global_zero:
        tracking.write_run_file(out_dir / "run.json", run_id)
        tracking.log_artifact(run_id, out_dir / "config.yaml")
        tracking.log_artifact(run_id, Path(checkpoint.best_model_path), "checkpoints")
        tracking.log_metrics(run_id, {"best/val_acc": float(checkpoint.best_model_score)})
    return best, run_id
