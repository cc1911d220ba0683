"""Pretraining the CNN on the source dataset (the ``pretrain`` stage's work), or taking a
torchvision model's ImageNet weights instead (``pretrain.source: imagenet``).

Outputs in models/pretrain/: backbone.pt (the backbone's state dict that fine-tuning starts
from), meta.json (model, classes, stages, best validation accuracy), history.csv, config.yaml.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.core.config import paths, save_config
from transferlab.core.errors import ConfigError
from transferlab.core.files import staged_dir, write_json, write_text
from transferlab.data.arrays import load_card
from transferlab.data.training_sets import training_sets
from transferlab.models import TORCHVISION_ARCHS, build_backbone, imagenet_weights
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training.budget import code_version, file_sha256
from transferlab.training.comparison import BACKBONE_FILE, HISTORY_FILE, history_csv, run_params
from transferlab.training.module import Classifier, save_torch


def build_module(cfg: DictConfig, num_classes: int) -> Classifier:
    p = cfg.pretrain
    try:
        return Classifier(OmegaConf.to_container(cfg.model), num_classes, cfg.data.image_size, lr=p.lr,
                          weight_decay=p.weight_decay, epochs=p.epochs)
    except ValueError as err:  # e.g. an image size the model cannot take, or a bad model argument
        raise ConfigError(f"model={cfg.model.name}: {err}") from None


def imagenet_backbone(cfg: DictConfig) -> None:
    """`pretrain.source: imagenet`: the backbone comes from torchvision's ImageNet weights, untrained here."""
    if not cfg.model._target_.endswith("torchvision_backbone"):
        raise ConfigError(f"pretrain.source=imagenet needs a torchvision model, not model={cfg.model.name} "
                          f"(allowed: {', '.join(TORCHVISION_ARCHS)})")
    try:
        backbone = build_backbone({**OmegaConf.to_container(cfg.model), "weights": "imagenet"}, cfg.data.image_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    with staged_dir(paths(cfg)["models"] / "pretrain") as staging:
        save_torch(backbone.state_dict(), staging / BACKBONE_FILE)
        write_json(staging / "meta.json", {"model": OmegaConf.to_container(cfg.model), "source": "imagenet",
                                           "weights_url": imagenet_weights(cfg.model.arch).url,
                                           "stages": backbone.stage_names, "image_size": cfg.data.image_size})
        save_config(cfg, staging / "config.yaml")
    print(f"pretrain: {cfg.model.name} backbone from torchvision's ImageNet weights (no training on the source data)")


def run_pretrain(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    where = paths(cfg)
    classes = load_card(where["raw"] / "source")["classes"]
    seed = cfg.seed if cfg.seed is not None else secrets.randbelow(2**31)  # seed: null = a fresh one each run
    train_set, val_set = training_sets(cfg, "source", materialised=False, seed=seed)
    fitting.seed_everything(seed)
    module = build_module(cfg, len(classes))
    params = run_params(cfg, None, "source", cfg.pretrain.epochs, None, len(train_set), len(val_set),
                        {"lr": cfg.pretrain.lr, "weight_decay": cfg.pretrain.weight_decay,
                         "batch_size": cfg.pretrain.batch_size, "source": cfg.pretrain.source})
    tags = {"stage": "pretrain", "quadrant": "source", "regime": "pretrain", "seed": str(cfg.seed),
            "dvc.stage": "pretrain", **runs.data_tags(cfg, "source")}
    config_file = state_root / "config.yaml"
    save_config(cfg, config_file)
    cell = fitting.Cell(name="pretrain", run_name="pretrain", seed=seed, epochs=cfg.pretrain.epochs, steps_per_epoch=None,
                        batch_size=cfg.pretrain.batch_size, tags=tags, params=params,
                        fingerprint_of={"params": params, "seed": seed, "code": code_version(),
                                        "data": load_card(where["raw"] / "source")["sha256"],
                                        "augmented": file_sha256(where["augmented"] / "source" / "x_train.npy"),
                                        "model": OmegaConf.to_container(cfg.model),
                                        "trainer": OmegaConf.to_container(cfg.trainer)},
                        artifacts={"": config_file})
    fitted = fitting.fit(cfg, cell, module, train_set, val_set, state_root, parent)
    if fitted.run_id is None:  # another DDP rank: global rank 0 writes the files
        return
    with staged_dir(where["models"] / "pretrain") as staging:
        save_torch(fitted.module.net.backbone.state_dict(), staging / BACKBONE_FILE)
        write_json(staging / "meta.json", {"model": OmegaConf.to_container(cfg.model), "source": "pipeline",
                                           "classes": classes, "stages": fitted.module.net.backbone.stage_names,
                                           "image_size": cfg.data.image_size, "val_acc": round(fitted.val_acc, 6),
                                           "best_epoch": fitted.best_epoch})
        write_text(staging / HISTORY_FILE, history_csv([{"seed": cfg.seed, **row} for row in fitted.history]))
        save_config(cfg, staging / "config.yaml")
    runs.log_artifact(fitted.run_id, where["models"] / "pretrain" / HISTORY_FILE)
    fitting.clear(state_root)
