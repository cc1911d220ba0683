"""Stage `pretrain`: train the CNN on the source dataset; save checkpoint and backbone weights.

`pretrain.source: imagenet` (torchvision models only) takes the backbone from torchvision's
ImageNet weights instead of training it here.

Outputs in models/pretrain/: model.ckpt (best val/acc, Lightning), backbone.pt (the
backbone's state dict that fine-tuning starts from), meta.json, config.yaml, run.json.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.cli import run_stage
from transferlab.config import ConfigError, load_config, paths, save_config
from transferlab.data import load_card, write_json
from transferlab.models import TORCHVISION_ARCHS, imagenet_weights
from transferlab.training import Classifier, build_backbone, fit, loaders, seed_everything
from transferlab.tracking import launched_as_global_zero
from transferlab.training_data import training_sets

BACKBONE_FILE = "backbone.pt"
SOURCES = ("pipeline", "imagenet")


def build_module(cfg: DictConfig, num_classes: int) -> Classifier:
    try:
        return Classifier(OmegaConf.to_container(cfg.model), num_classes, cfg.data.image_size, lr=cfg.train.lr,
                          weight_decay=cfg.train.weight_decay, epochs=cfg.train.epochs)
    except ValueError as err:  # e.g. an image size the model cannot take, or a bad model argument
        raise ConfigError(f"model={cfg.model.name}: {err}") from None


def imagenet_backbone(cfg: DictConfig, out_dir) -> None:
    """`pretrain.source: imagenet`: the backbone comes from torchvision's ImageNet weights, untrained here."""
    if not cfg.model._target_.endswith("TorchvisionBackbone"):
        raise ConfigError(f"pretrain.source=imagenet needs a torchvision model, not model={cfg.model.name} "
                          f"(allowed: {', '.join(TORCHVISION_ARCHS)})")
    model_cfg = {**OmegaConf.to_container(cfg.model), "weights": "imagenet"}
    try:
        backbone = build_backbone(model_cfg, cfg.data.image_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    torch.save(backbone.state_dict(), out_dir / BACKBONE_FILE)
    write_json(out_dir / "meta.json", {"model": OmegaConf.to_container(cfg.model), "source": "imagenet",
                                       "weights_url": imagenet_weights(cfg.model.arch).url,
                                       "stages": backbone.stage_names, "image_size": cfg.data.image_size})
    print(f"pretrain: {cfg.model.name} backbone from torchvision's ImageNet weights (no training on the source data)")


def main(argv: list[str]) -> None:
    cfg = load_config("pretrain", argv)
    where = paths(cfg)
    if cfg.pretrain.source not in SOURCES:
        raise ConfigError(f"pretrain.source={cfg.pretrain.source!r} is not allowed (allowed: {', '.join(SOURCES)})")
    out_dir = where["models"] / "pretrain"
    if cfg.pretrain.source == "imagenet":
        out_dir.mkdir(parents=True, exist_ok=True)
        imagenet_backbone(cfg, out_dir)
        save_config(cfg, out_dir / "config.yaml")
        return
    classes = load_card(where["raw"] / "source")["classes"]
    seed_everything(cfg.seed)
    module = build_module(cfg, len(classes))
    train_set, val_set = training_sets(cfg, "source")
    if launched_as_global_zero():  # under DDP every rank runs this; one writes
        save_config(cfg, out_dir / "config.yaml")
    train_loader, val_loader = loaders(train_set, val_set, cfg.train.batch_size, cfg.seed)
    best, run_id = fit(cfg, module, train_loader, val_loader, out_dir, run_name="pretrain",
                       tags={"stage": "pretrain", "quadrant": "source", "regime": "pretrain"})
    if run_id is None:  # another DDP rank: global rank 0 writes the files
        return
    torch.save(best.net.backbone.state_dict(), out_dir / BACKBONE_FILE)
    write_json(out_dir / "meta.json", {"model": OmegaConf.to_container(cfg.model), "source": "pipeline",
                                       "classes": classes,
                                       "stages": best.net.backbone.stage_names,
                                       "image_size": cfg.data.image_size})


if __name__ == "__main__":
    run_stage("pretrain", main)
