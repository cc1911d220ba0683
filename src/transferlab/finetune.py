"""Stage `finetune@<quadrant>`: transfer the pretrained CNN to one target under its regime.

The regime (conf/regime/<name>.yaml, chosen per quadrant in params.yaml) decides, as in
DESIGN.md §2: whether the backbone starts from the pretrained weights (`init`), where it
is cut (`cut_at`), whether the kept stages are frozen, and the backbone's learning rate
relative to the new head's. Outputs in models/<quadrant>/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.cli import run_stage
from transferlab.config import ConfigError, load_config, paths, save_config
from transferlab.data import load_card
from transferlab.pretrain import BACKBONE_FILE
from transferlab.training import Classifier, cached_training_sets, fit, loaders, seed_everything
from transferlab.tracking import launched_as_global_zero
from transferlab.training_data import training_sets


def pretrained_state(cfg: DictConfig) -> dict[str, torch.Tensor] | None:
    """The pretrained backbone weights when the regime starts from them, checked against the config."""
    if cfg.regime.init != "pretrained":
        return None
    folder = paths(cfg)["models"] / "pretrain"
    weights = folder / BACKBONE_FILE
    if not weights.is_file():
        raise ConfigError(f"pretrained checkpoint {weights} not found (regime {cfg.regime.name} starts from it): "
                          f"run `dvc repro pretrain` first, or use a regime with init: random")
    trained_with = json.loads((folder / "meta.json").read_text())["model"]
    if trained_with != OmegaConf.to_container(cfg.model):
        raise ConfigError(f"pretrained checkpoint {weights} is a {trained_with.get('name')} with other settings "
                          f"than model={cfg.model.name} asks for: re-run `dvc repro pretrain`")
    return torch.load(weights, map_location="cpu", weights_only=True)


def build_module(cfg: DictConfig, num_classes: int) -> Classifier:
    regime = cfg.regime
    try:
        return Classifier(OmegaConf.to_container(cfg.model), num_classes, cfg.data.image_size, lr=cfg.train.lr,
                          weight_decay=cfg.train.weight_decay, epochs=cfg.train.epochs, cut_at=regime.cut_at,
                          freeze_backbone=regime.freeze_backbone, backbone_lr_factor=regime.backbone_lr_factor,
                          head_dropout=regime.head_dropout, head_hidden=regime.head_hidden,
                          head_epochs=regime.head_epochs, plateau_patience=regime.plateau_patience,
                          unfreeze_top=regime.unfreeze_top)
    except ValueError as err:  # e.g. an unknown cut_at, with the allowed stage names
        raise ConfigError(f"quadrants.{cfg.quadrant}: {err}") from None


def prepare(cfg: DictConfig, quadrant: str, train_set, val_set) -> tuple[Classifier, object, object]:
    """The module for one quadrant's regime (pretrained backbone loaded) and its training data,
    with the frozen part's features cached when the regime asks for it and the data allows it."""
    classes = load_card(paths(cfg)["raw"] / quadrant)["classes"]
    seed_everything(cfg.seed)  # before building: the new head's initialisation is reproducible
    module = build_module(cfg, len(classes))  # validates cut_at
    state = pretrained_state(cfg)
    if state is not None:
        module.load_backbone(state)
    if cfg.regime.cache_features:
        if train_set.transform is not None:
            print(f"{quadrant}: cache_features is not used: augmentation runs on the fly (augment.copies=0), so every "
                  f"epoch sees new images; set augment.copies > 0 to cache")
        else:
            started = time.perf_counter()
            train_set, val_set = cached_training_sets(module, train_set, val_set)
            print(f"{quadrant}: cached frozen features of {len(train_set)} training and {len(val_set)} validation "
                  f"images in {time.perf_counter() - started:.1f}s")
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    print(f"{quadrant}: regime {cfg.regime.name}, {len(train_set)} training images, "
          f"{trainable:,} of {sum(p.numel() for p in module.parameters()):,} parameters trainable")
    return module, train_set, val_set


def main(argv: list[str]) -> None:
    cfg = load_config("finetune", argv)
    quadrant = cfg.quadrant
    train_set, val_set = training_sets(cfg, quadrant, cfg.train.train_per_class)
    out_dir: Path = paths(cfg)["models"] / quadrant
    module, train_set, val_set = prepare(cfg, quadrant, train_set, val_set)
    if launched_as_global_zero():  # under DDP every rank runs this; one writes
        save_config(cfg, out_dir / "config.yaml")
    train_loader, val_loader = loaders(train_set, val_set, cfg.train.batch_size, cfg.seed)
    fit(cfg, module, train_loader, val_loader, out_dir, run_name=f"finetune/{quadrant}",
        tags={"stage": "finetune", "quadrant": quadrant, "regime": cfg.regime.name})


if __name__ == "__main__":
    run_stage("finetune", main)
