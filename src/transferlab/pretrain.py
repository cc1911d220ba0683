"""Stage `pretrain`: train the CNN on the source dataset; save checkpoint and backbone weights.

Outputs in models/pretrain/: model.ckpt (best val/acc, Lightning), backbone.pt (the
backbone's state dict that fine-tuning starts from), meta.json, config.yaml, run.json.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.cli import run_stage
from transferlab.config import load_config, paths, save_config
from transferlab.data import load_meta, write_json
from transferlab.training import Classifier, fit, loaders, seed_everything
from transferlab.training_data import training_sets

BACKBONE_FILE = "backbone.pt"


def build_module(cfg: DictConfig, num_classes: int) -> Classifier:
    return Classifier(OmegaConf.to_container(cfg.model), num_classes, cfg.data.image_size, lr=cfg.train.lr,
                      weight_decay=cfg.train.weight_decay, epochs=cfg.train.epochs)


def main(argv: list[str]) -> None:
    cfg = load_config("pretrain", argv)
    where = paths(cfg)
    train_set, val_set = training_sets(cfg, "source")
    classes = load_meta(where["raw"] / "source")["classes"]
    seed_everything(cfg.seed)
    module = build_module(cfg, len(classes))
    out_dir = where["models"] / "pretrain"
    save_config(cfg, out_dir / "config.yaml")
    train_loader, val_loader = loaders(train_set, val_set, cfg.train.batch_size, cfg.seed)
    best, _ = fit(cfg, module, train_loader, val_loader, out_dir, run_name="pretrain",
                  tags={"stage": "pretrain", "quadrant": "source", "regime": "pretrain"})
    torch.save(best.net.backbone.state_dict(), out_dir / BACKBONE_FILE)
    write_json(out_dir / "meta.json", {"model": OmegaConf.to_container(cfg.model), "classes": classes,
                                       "stages": best.net.backbone.stage_names,
                                       "image_size": cfg.data.image_size})


if __name__ == "__main__":
    run_stage("pretrain", main)
