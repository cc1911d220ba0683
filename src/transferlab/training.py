"""The LightningModule every training stage uses, and the shared fit() of pretrain/finetune."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, TensorDataset
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferlab import tracking
from transferlab.config import ConfigError
from transferlab.models import Backbone, Head, TransferNet

# A frozen backbone is in eval mode on purpose (BatchNorm statistics must not move).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

HISTORY_FILE = "history.csv"  # per-epoch train/val loss and accuracy, beside the checkpoint
CHECKPOINT_NAME = "model"  # -> model.ckpt (no "=" in the name: MLflow rejects it)
console = Console(stderr=True, highlight=False)


def build_backbone(model_cfg: dict[str, Any], image_size: int) -> Backbone:
    """Instantiate the configured backbone; a bad argument is a ValueError with the model's own message."""
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    if kwargs.get("_target_", "").endswith("SmallCNN"):
        kwargs["image_size"] = image_size
    try:
        return instantiate(kwargs)
    except InstantiationException as err:  # Hydra wraps the constructor's error in a multi-line text
        cause = err.__cause__
        raise ValueError(str(cause) if cause else str(err).splitlines()[0]) from None


def check_input_size(net: nn.Module, image_size: int, model_name: str) -> None:
    """Fail before training when ``image_size`` does not survive the model's downsampling."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as err:
        raise ValueError(f"image_size={image_size} is too small for model {model_name} "
                         f"({str(err).splitlines()[0]})") from None
    finally:
        net.train(was_training)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """The metric names every regime reports: <prefix>acc and <prefix>macro_f1.

    ``validate_args=False`` skips torchmetrics' per-update input checks (labels are checked
    where the data is made); the saving measured was small (BENCHMARKS.md, feature cache).
    """
    return MetricCollection(
        {"acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
         "macro_f1": MulticlassF1Score(num_classes, average="macro", validate_args=False)},
        prefix=prefix)


class Classifier(L.LightningModule):
    """A backbone (optionally truncated at ``cut_at``) with a new head, trained under a regime.

    - ``freeze_backbone``: the backbone never trains (``requires_grad`` off, no optimizer group).
    - Otherwise each backbone stage is an optimizer group ``backbone.<stage>`` at
      ``lr * backbone_lr_factor``, beside ``head`` at ``lr`` (discriminative learning rates).
    - Two phases (``head_epochs`` > 0): only the head trains until epoch ``head_epochs``, or
      earlier once val/acc has not improved for ``plateau_patience`` epochs; then the backbone
      (or only its top ``unfreeze_top`` stages) joins at its smaller learning rate. Phases are
      gated explicitly: every group exists from the start (DDP- and scheduler-safe), a stage
      that is not training gets lr 0 from the LambdaLR, no gradient (dropped before the
      optimizer step) and eval mode. The phase state is saved in checkpoints, so a resumed
      fit continues in the right phase.

    Frozen means weights *and* BatchNorm statistics: a stage that is not training is put in
    eval mode when built, at every epoch start and whenever ``train()`` is called (Lightning
    2.6 does not call ``train()`` at fit start; it keeps and restores each submodule's mode).
    """

    def __init__(self, model_cfg: dict[str, Any], num_classes: int, image_size: int, lr: float,
                 weight_decay: float, epochs: int, cut_at: str | None = None, freeze_backbone: bool = False,
                 backbone_lr_factor: float = 1.0, head_dropout: float = 0.0, head_hidden: int | None = None,
                 head_epochs: int = 0, plateau_patience: int | None = None, unfreeze_top: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        backbone = build_backbone(model_cfg, image_size).truncated(cut_at)
        names = backbone.stage_names
        checks = [
            (0 <= head_epochs < epochs, f"head_epochs={head_epochs} (allowed: 0..{epochs - 1}, fewer than the epochs)"),
            (unfreeze_top is None or 1 <= unfreeze_top <= len(names),
             f"unfreeze_top={unfreeze_top} (allowed: null or 1..{len(names)}, the stages kept)"),
            (plateau_patience is None or plateau_patience >= 1, f"plateau_patience={plateau_patience} (allowed: null or >= 1)"),
            (freeze_backbone or backbone_lr_factor > 0, f"backbone_lr_factor={backbone_lr_factor} (allowed: > 0)"),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"{what} is not allowed")
        self.net = TransferNet(backbone, Head(backbone.out_channels, num_classes, head_dropout, head_hidden))
        check_input_size(self.net, image_size, model_cfg.get("name", model_cfg.get("_target_", "?")))
        if freeze_backbone:
            self.net.backbone.requires_grad_(False)
        self.phase2_from = head_epochs  # first epoch of phase 2 (0: one phase)
        self._best_val, self._epochs_since_best = float("-inf"), 0
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_samples = SumMetric()  # logged as val/samples: every val image counted once, also under DDP
        self.channels_last = False
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) through the whole network, or cached features (N, C) through the head."""
        return self.net.head(x) if x.dim() == 2 else self.net(x)

    # -- which stages train when -------------------------------------------------------------
    def phase2_stages(self) -> list[str]:
        names = self.net.backbone.stage_names
        if self.hparams.freeze_backbone:
            return []
        top = self.hparams.unfreeze_top
        return names[-top:] if top else names

    def training_stages(self, epoch: int) -> list[str]:
        return self.phase2_stages() if epoch >= self.phase2_from else []

    def phase(self, epoch: int) -> int:
        return 2 if epoch >= self.phase2_from else 1

    def _apply_modes(self, mode: bool) -> None:
        training = set(self.training_stages(self.current_epoch)) if mode else set()
        for name, stage in self.net.backbone.named_children():
            stage.train(name in training)
        self.net.backbone.training = bool(training)

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        self._apply_modes(mode)
        return self

    def on_train_start(self) -> None:
        self.train()

    def on_train_epoch_start(self) -> None:
        self._epoch_started = time.perf_counter()
        self._check_plateau()
        self._refresh_learning_rates()
        self.train()
        self.log("phase", float(self.phase(self.current_epoch)), on_step=False, on_epoch=True)
        scheduler = self.lr_schedulers()
        if scheduler is not None:  # logged here, after the refresh (LearningRateMonitor runs before it)
            self.log_dict({f"lr/{g['name']}": g["lr"] for g in scheduler.optimizer.param_groups},
                          on_step=False, on_epoch=True)

    def _check_plateau(self) -> None:
        """End phase 1 once the previous epochs' val/acc stopped improving for ``plateau_patience``.

        Checked at epoch start: Lightning fills ``callback_metrics`` after the module's
        ``on_validation_epoch_end``, so only here is the last val/acc there.
        """
        patience = self.hparams.plateau_patience
        value = self.trainer.callback_metrics.get("val/acc")
        if patience is None or value is None or self.phase(self.current_epoch) == 2:
            return
        if float(value) > self._best_val:
            self._best_val, self._epochs_since_best = float(value), 0
        else:
            self._epochs_since_best += 1
        if self._epochs_since_best >= patience:
            self.phase2_from = self.current_epoch

    def _refresh_learning_rates(self) -> None:
        """Set each group's lr for this epoch from its LambdaLR factor (LambdaLR's own formula).

        Makes the lr a function of (epoch, phase) alone, whatever the order of Lightning's
        scheduler step and the phase switch, and after a resume.
        """
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        for group, base, factor in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * factor(self.current_epoch)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.freeze_backbone:
            return  # requires_grad is off: there are no backbone gradients to drop
        training = set(self.training_stages(self.current_epoch))
        for name, stage in self.net.backbone.named_children():
            if name not in training:
                for parameter in stage.parameters():
                    parameter.grad = None  # AdamW skips it: no step, no weight decay, no moments

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["transfer_phase"] = {"phase2_from": self.phase2_from, "best_val": self._best_val,
                                        "epochs_since_best": self._epochs_since_best}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("transfer_phase")
        if state:
            self.phase2_from = state["phase2_from"]
            self._best_val, self._epochs_since_best = state["best_val"], state["epochs_since_best"]

    def load_backbone(self, state: dict[str, torch.Tensor]) -> None:
        """Load pretrained weights into the (possibly truncated) backbone; every kept key must be there."""
        own = self.net.backbone.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"pretrained weights lack {len(missing)} tensors, e.g. {missing[:3]}")
        self.net.backbone.load_state_dict({key: state[key] for key in own}, strict=True)

    def use_channels_last(self) -> None:
        """Convolution weights, and every image batch from now on, in channels-last memory format."""
        self.channels_last = True
        self.to(memory_format=torch.channels_last)

    def _step(self, batch, metrics: MetricCollection, loss_metric: MeanMetric) -> torch.Tensor:
        images, labels = batch
        if self.channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = self(images)
        loss = nn.functional.cross_entropy(logits, labels)
        metrics.update(logits, labels)
        loss_metric.update(loss.detach(), weight=len(labels))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        if self.automatic_optimization:
            return self._step(batch, self.train_metrics, self.train_loss)
        # Cached features (see cached_training_sets): the loader's one item is the whole epoch,
        # already shuffled and split into batches; each gets its own optimizer step here, which
        # spares Lightning's per-step loop on a head whose own step takes a fraction of a ms.
        # Metrics are updated once for the epoch: per-batch updates cost more than the step.
        optimizer = self.optimizers()
        all_logits, all_labels, losses = [], [], []
        for features, labels in batch:
            logits = self(features)
            loss = nn.functional.cross_entropy(logits, labels)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            all_logits.append(logits.detach())
            all_labels.append(labels)
            losses.append(loss.detach())
        self.train_metrics.update(torch.cat(all_logits), torch.cat(all_labels))
        self.train_loss.update(torch.stack(losses), weight=torch.tensor([float(len(y)) for y in all_labels]))
        return None

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_metrics, self.val_loss)
        self.val_samples.update(len(batch[1]))

    def _log_epoch(self, prefix: str, metrics: MetricCollection, loss_metric: MeanMetric) -> None:
        """Log the epoch's metrics once: per-step `self.log` costs ~0.8 ms a call, more than a head's step."""
        values = {**metrics.compute(), f"{prefix}loss": loss_metric.compute()}
        self.log_dict(values, on_step=False, on_epoch=True)
        metrics.reset()
        loss_metric.reset()

    def on_validation_epoch_end(self) -> None:
        self.log("val/samples", self.val_samples.compute(), on_step=False, on_epoch=True)
        self.val_samples.reset()
        self._log_epoch("val/", self.val_metrics, self.val_loss)

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:  # Lightning steps schedulers only in automatic optimization
            self.lr_schedulers().step()
        self._log_epoch("train/", self.train_metrics, self.train_loss)
        if self.trainer.is_global_zero:
            shown = ("train/loss", "train/acc", "val/loss", "val/acc", "val/macro_f1")
            metrics = self.trainer.callback_metrics
            values = "  ".join(f"{k}={float(metrics[k]):.4f}" for k in shown if k in metrics)
            console.print(f"epoch {self.current_epoch + 1}/{self.trainer.max_epochs}  {values}  "
                          f"({time.perf_counter() - self._epoch_started:.1f}s)")

    # -- optimisation -------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Named groups: ``head`` and, unless the backbone is frozen, ``backbone.<stage>`` per stage."""
        hp = self.hparams
        groups = [{"name": "head", "params": list(self.net.head.parameters()), "lr": hp.lr}]
        if not hp.freeze_backbone:
            for name, stage in self.net.backbone.named_children():
                params = list(stage.parameters())
                if params:
                    groups.append({"name": f"backbone.{name}", "params": params, "lr": hp.lr * hp.backbone_lr_factor})
        return groups

    def _cosine(self, epoch: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, self.hparams.epochs) / self.hparams.epochs))

    def _lr_factor(self, group_name: str) -> Callable[[int], float]:
        if group_name == "head":
            return self._cosine
        stage = group_name.removeprefix("backbone.")
        return lambda epoch: self._cosine(epoch) if stage in self.training_stages(epoch) else 0.0

    def configure_optimizers(self):
        groups = self.parameter_groups()
        optimizer = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [self._lr_factor(g["name"]) for g in groups])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


@torch.inference_mode()
def frozen_features(module: Classifier, dataset, batch_size: int = 512) -> TensorDataset:
    """The frozen backbone's pooled outputs (N, C) for every row of ``dataset``, once.

    The head's first operation is global average pooling, so pooled features are all it
    needs; training the head on them is the same computation as on the images.
    """
    if not module.hparams.freeze_backbone:
        raise ValueError("feature caching needs a frozen backbone (freeze_backbone: true)")
    backbone = module.net.backbone.eval()
    features, labels = [], []
    # Its own generator: a DataLoader without one draws its base seed from the global RNG,
    # which would shift every later random draw (dropout) against the uncached path.
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=torch.Generator()):
        out = backbone(images)
        features.append(out.mean(dim=(2, 3)) if out.dim() == 4 else out)
        labels.append(targets)
    return TensorDataset(torch.cat(features), torch.cat(labels))


class EpochBatches(Dataset):
    """Cached features for one loader item per epoch: indexed with the epoch's shuffled order
    (all rows), it returns that order's features split into (features, labels) batches."""

    def __init__(self, tensors: TensorDataset, batch_size: int):
        self.tensors, self.batch_size = tensors, batch_size

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, order: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features, labels = self.tensors[order]
        return list(zip(features.split(self.batch_size), labels.split(self.batch_size)))


def cached_training_sets(module: Classifier, train_set, val_set) -> tuple[TensorDataset, TensorDataset]:
    """The frozen part's features of both sets, computed once, and the module switched to
    stepping through a whole cached epoch per loader item (manual optimization; pair with
    ``loaders``, which builds that loader for feature datasets)."""
    module.automatic_optimization = False
    return frozen_features(module, train_set), frozen_features(module, val_set)


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
    """Training (seeded shuffle) and validation loaders.

    Tensor datasets (cached features) give one item per epoch: the same seeded RandomSampler
    draws the epoch's order (so the batches equal the per-item path's), and ``EpochBatches``
    reads it in one indexing operation and splits it into batches for the module's own loop.
    """
    generator = torch.Generator().manual_seed(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**63))
    if isinstance(train_set, TensorDataset):
        sampler = BatchSampler(RandomSampler(train_set, generator=generator), len(train_set), drop_last=False)
        train = DataLoader(EpochBatches(train_set, batch_size), batch_size=None, sampler=sampler, generator=generator)
        val = DataLoader(val_set, batch_size=None,
                         sampler=BatchSampler(SequentialSampler(val_set), max(batch_size, 256), drop_last=False))
        return train, val
    train = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=False, generator=generator,
                       num_workers=num_workers, worker_init_fn=seed_worker_transform,
                       persistent_workers=num_workers > 0)
    val = DataLoader(val_set, batch_size=max(batch_size, 256), shuffle=False)
    return train, val


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16-mixed on GPUs that support it (else 16-mixed), 32-true on CPU."""
    if precision != "auto":
        return precision
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if not on_gpu:
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def trainer_settings(cfg: DictConfig, module: Classifier) -> dict[str, Any]:
    """The Trainer's kwargs from the trainer config; applies its two module switches.

    ``channels_last``: weights and input batches in NHWC memory format (faster convolutions on
    tensor cores). ``compile``: ``torch.compile`` the network in place (parameter names, and so
    checkpoints, are unchanged).
    """
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("name", None)
    if kwargs.pop("channels_last", False):
        module.use_channels_last()
    if kwargs.pop("compile", False):
        module.net.compile()
    kwargs["precision"] = resolve_precision(str(kwargs.get("precision", "32-true")), str(kwargs.get("accelerator")))
    return kwargs


class EpochHistory(Callback):
    """Each epoch's train/val loss and accuracy, for ``history.csv`` (DVC plots, learning curves).

    An epoch is recorded when the next one starts, or training ends: the module logs its
    train metrics in its own ``on_train_epoch_end``, which Lightning calls after this
    callback's, so they are complete only then.
    """

    KEYS = ("train/loss", "train/acc", "val/loss", "val/acc")

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def _record(self, trainer: L.Trainer) -> None:
        metrics = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch,
                          **{key.replace("/", "_"): round(float(metrics[key]), 6) for key in self.KEYS if key in metrics}})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self._record(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record(trainer)

    def write(self, path: Path) -> None:
        columns = ["epoch", *(key.replace("/", "_") for key in self.KEYS)]
        lines = [",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in self.rows]
        path.write_text("\n".join(lines) + "\n")


class FitData(L.LightningDataModule):
    """The loaders of one fit. Under DDP, validation is sharded without padding.

    Lightning's own DistributedSampler pads the validation set so that every rank gets the
    same number of batches, which counts some samples twice in val/acc (the number the best
    checkpoint is chosen by). Here each rank takes every world_size-th sample, each sample once;
    torchmetrics then sums the ranks' counts. The hook runs after the process group exists,
    when the rank is known.
    """

    def __init__(self, train: DataLoader, val: DataLoader):
        super().__init__()
        self.train, self.val = train, val

    def train_dataloader(self) -> DataLoader:
        return self.train

    def val_dataloader(self) -> DataLoader:
        world = self.trainer.world_size
        if world == 1:
            return self.val
        sampler = UnrepeatedDistributedSampler(self.val.dataset, num_replicas=world, rank=self.trainer.global_rank,
                                               shuffle=False)
        return DataLoader(self.val.dataset, batch_size=self.val.batch_size, sampler=sampler)


def fit(cfg: DictConfig, module: Classifier, train_loader: DataLoader, val_loader: DataLoader, out_dir: Path,
        run_name: str, tags: dict[str, str], log_checkpoint: bool = True) -> tuple[Classifier, str | None]:
    """Train with Lightning, tracked in one MLflow run; returns the best-val module and the run id.

    The best checkpoint (by val/acc) is ``out_dir/model.ckpt``; the run id goes to
    ``out_dir/run.json`` so the evaluation stage logs its test metrics into the same run.
    Under DDP every rank runs the stage: only global rank 0 creates the run and writes files,
    and the returned run id is None on the other ranks (callers write nothing there).
    """
    trainer_kwargs = trainer_settings(cfg, module)
    if "ddp" in str(trainer_kwargs.get("strategy", "")) and isinstance(train_loader.dataset, EpochBatches):
        raise ConfigError("cache_features=true is not supported under DDP (every rank would train the same head on "
                          "the whole cache): set cache_features=false or train on one device")
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = tracking.start_run(cfg, run_name, tags) if tracking.launched_as_global_zero() else None
    # On other ranks the logger never touches MLflow (Lightning gives them a dummy experiment).
    logger = MLFlowLogger(experiment_name=cfg.tracking.experiment_name, tracking_uri=tracking.tracking_uri(),
                          run_id=run_id)
    history = EpochHistory()
    checkpoint = ModelCheckpoint(dirpath=out_dir, filename=CHECKPOINT_NAME, monitor="val/acc", mode="max",
                                 save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False)
    trainer: L.Trainer = instantiate(trainer_kwargs, max_epochs=cfg.train.epochs, logger=logger,
                                     callbacks=[checkpoint, history], default_root_dir=str(out_dir))
    trainer.fit(module, datamodule=FitData(train_loader, val_loader))
    best = Classifier.load_from_checkpoint(checkpoint.best_model_path, map_location="cpu")
    if not trainer.is_global_zero:
        return best, None
    tracking.write_run_file(out_dir / "run.json", run_id)
    history.write(out_dir / HISTORY_FILE)
    tracking.log_artifact(run_id, out_dir / HISTORY_FILE)
    tracking.log_artifact(run_id, out_dir / "config.yaml")
    if log_checkpoint:
        tracking.log_artifact(run_id, Path(checkpoint.best_model_path), "checkpoints")
    tracking.log_metrics(run_id, {"best/val_acc": float(checkpoint.best_model_score)})
    tracking.close_parent(cfg.tracking.experiment_name)
    return best, run_id
