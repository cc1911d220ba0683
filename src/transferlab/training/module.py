"""The LightningModule every training stage uses: a backbone with a new head, trained under a regime."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from transferlab.models import Head, TransferNet, build_backbone
from transferlab.training.schedule import PhasePlan


def check_input_size(net: nn.Module, image_size: int, model_name: str) -> None:
    """Fail before training when ``image_size`` does not survive the model's downsampling."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, image_size, image_size))
    except RuntimeError as err:
        raise ValueError(
            f"image_size={image_size} is too small for model {model_name} ({str(err).splitlines()[0]})"
        ) from None
    finally:
        net.train(was_training)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """The metric names every regime reports: <prefix>acc and <prefix>macro_f1.

    ``validate_args=False`` skips torchmetrics' per-update input checks (labels are checked
    where the data is made); the saving measured was small (BENCHMARKS.md, feature cache).
    """
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False),
            "macro_f1": MulticlassF1Score(num_classes, average="macro", validate_args=False),
        },
        prefix=prefix,
    )


class Classifier(L.LightningModule):
    """A backbone (optionally truncated at ``cut_at``) with a new head; ``PhasePlan`` says what trains when.

    Frozen means weights *and* BatchNorm statistics: a stage that is not training is put in
    eval mode when built, at every epoch start and whenever ``train()`` is called (Lightning
    2.6 does not call ``train()`` at fit start; it keeps and restores each submodule's mode).
    The phase state is saved in checkpoints, so a resumed fit continues in the right phase.
    """

    def __init__(
        self,
        model_cfg: dict[str, Any],
        num_classes: int,
        image_size: int,
        lr: float,
        weight_decay: float,
        epochs: int,
        cut_at: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_factor: float = 1.0,
        head_dropout: float = 0.0,
        head_hidden: int | None = None,
        head_epochs: int = 0,
        plateau_patience: int | None = None,
        unfreeze_top: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()  # restores the module from a checkpoint; not logged (see tracking.logger)
        backbone = build_backbone(model_cfg, image_size).truncated(cut_at)
        self.plan = PhasePlan(
            backbone.stage_names, epochs, freeze_backbone, head_epochs, plateau_patience, unfreeze_top
        )
        self.net = TransferNet(backbone, Head(backbone.out_channels, num_classes, head_dropout, head_hidden))
        check_input_size(self.net, image_size, model_cfg.get("name", model_cfg.get("_target_", "?")))
        if freeze_backbone:
            self.net.backbone.requires_grad_(False)
        self.train_metrics = classification_metrics(num_classes, "train/")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_samples = SumMetric()  # every val image counted once, also under DDP (see loaders.FitData)
        self.last_val_samples = 0
        self.history: list[dict[str, float]] = []  # one row per epoch (history.csv), saved in checkpoints
        self._last_val: dict[str, float] = {}
        self.channels_last = False
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, H, W) through the whole network, or cached features (N, C) through the head."""
        return self.net.head(x) if x.dim() == 2 else self.net(x)

    @property
    def epoch_val_acc(self) -> float | None:
        """This epoch's validation accuracy, between the validation and the end of the epoch (else None)."""
        return self._last_val.get("val/acc")

    # -- which stages train when -------------------------------------------------------------
    def _apply_modes(self, mode: bool) -> None:
        training = set(self.plan.training_stages(self.current_epoch)) if mode else set()
        for name, stage in self.net.backbone.named_children():
            stage.train(name in training)
        self.net.backbone.training = bool(training)

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        self._apply_modes(mode)
        return self

    def on_train_start(self) -> None:
        self.train()

    def on_train_epoch_start(self) -> None:
        self._refresh_learning_rates()
        self.train()

    def _refresh_learning_rates(self) -> None:
        """Set each group's lr for this epoch from the plan: the lr is a function of (epoch, phase)
        alone, whatever the order of Lightning's scheduler step and the phase switch, and after a resume."""
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
            group["lr"] = base * self.plan.lr_factor(group["name"], self.current_epoch)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.freeze_backbone:
            return  # requires_grad is off: there are no backbone gradients to drop
        training = set(self.plan.training_stages(self.current_epoch))
        for name, stage in self.net.backbone.named_children():
            if name not in training:
                for parameter in stage.parameters():
                    parameter.grad = None  # AdamW skips it: no step, no weight decay, no moments

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["transfer_phase"] = self.plan.state()
        checkpoint["epoch_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "transfer_phase" in checkpoint:
            self.plan.restore(checkpoint["transfer_phase"])
        self.history = list(checkpoint.get("epoch_history", []))

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

    # -- steps ---------------------------------------------------------------------------------
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
        # Cached features (see feature_cache.EpochBatches): the loader's one item is the whole epoch,
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

    @staticmethod
    def _epoch_values(prefix: str, metrics: MetricCollection, loss_metric: MeanMetric) -> dict[str, float]:
        """The epoch's accumulated metrics, once (per-step logging costs ~0.8 ms a call, more than a
        head's step); the accumulators start over."""
        values = {**metrics.compute(), f"{prefix}loss": loss_metric.compute()}
        metrics.reset()
        loss_metric.reset()
        return {k: float(v) for k, v in values.items()}

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.last_val_samples = int(self.val_samples.compute())
        self.val_samples.reset()
        values = self._epoch_values("val/", self.val_metrics, self.val_loss)
        self.log_dict(values, on_step=False, on_epoch=True)
        self._last_val = values
        self.plan.observe_val(self.current_epoch + 1, values["val/acc"])

    def on_train_epoch_end(self) -> None:
        if not self.automatic_optimization:  # Lightning steps schedulers only in automatic optimization
            self.lr_schedulers().step()
        train = self._epoch_values("train/", self.train_metrics, self.train_loss)
        self.history.append(
            {
                "epoch": self.current_epoch + 1,
                "train_loss": train["train/loss"],
                "train_acc": train["train/acc"],
                **{k.replace("/", "_"): v for k, v in self._last_val.items() if k != "val/macro_f1"},
            }
        )
        self._last_val = {}
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            train.update(self._learning_rates([g["name"] for g in scheduler.optimizer.param_groups]))
        if self.plan.two_phase:
            train["phase"] = float(self.plan.phase(self.current_epoch))
        # Written to the loggers now, not through `self.log`: Lightning logs epoch values after the
        # callbacks' on_train_epoch_end, i.e. after ResumeState's checkpoint, and a kill in between
        # lost the epoch's train metrics for good (the resumed fit starts at the next epoch; seen in CI).
        for logger in self.loggers:
            logger.log_metrics({**train, "epoch": self.current_epoch}, step=self.global_step)

    def _learning_rates(self, groups: list[str]) -> dict[str, float]:
        """This epoch's learning rates: ``lr/head``, and ``lr/backbone`` when the backbone trains, or one
        series per backbone stage when their rates differ (two phases with ``unfreeze_top``)."""
        hp, epoch = self.hparams, self.current_epoch
        rates = {
            g: hp.lr * (1 if g == "head" else hp.backbone_lr_factor) * self.plan.lr_factor(g, epoch) for g in groups
        }
        backbone = {g: v for g, v in rates.items() if g != "head"}
        if len(set(backbone.values())) == 1:
            return {"lr/head": rates["head"], "lr/backbone": next(iter(backbone.values()))}
        return {f"lr/{g}": v for g, v in rates.items()}

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

    def configure_optimizers(self):
        groups = self.parameter_groups()
        # AdamW: weight decay decoupled from the adaptive step, so a group that gets no gradient
        # in a phase (grad = None) is not decayed either: frozen-for-now stays exactly unchanged.
        optimizer = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
        factors = [lambda epoch, name=g["name"]: self.plan.lr_factor(name, epoch) for g in groups]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def save_torch(obj: Any, path) -> None:
    """``torch.save`` with the same bytes for the same content, written atomically. Saved through a
    buffer: torch names the zip archive's folder after the file, so a temporary file name would
    end up inside the output."""
    import io

    from transferlab.core.files import write_bytes

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_model(module: Classifier, path) -> None:
    """The trained network as a DVC output: its constructor arguments and weights, nothing else
    (no paths, run ids or timestamps, so the same weights give the same bytes)."""
    save_torch({"hparams": dict(module.hparams), "state_dict": module.net.state_dict()}, path)


def load_model(path) -> Classifier:
    """A network saved by ``save_model``; a missing, truncated or foreign file is one line."""
    from transferlab.core.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"{path} not found: run the stage that makes it first (`dvc repro`)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        module = Classifier(**saved["hparams"])
        module.net.load_state_dict(saved["state_dict"])
    except Exception as err:  # a truncated or foreign file fails in many ways (EOFError, IndexError, KeyError, ...)
        raise ConfigError(
            f"{path} cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0][:120]}): "
            f"the file is truncated or from other code; re-run the stage that makes it "
            f"(`dvc repro -f <stage>`)"
        ) from None
    return module.eval()
