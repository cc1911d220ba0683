"""Per-epoch time of frozen regimes trained on images (uncached) vs on cached features.

For freeze_all and truncate_freeze (regime configs from conf/, default model), on built-in
similar-target shapes at the small (30/class) and large (500/class) training sizes, with
50 validation images per class and the default batch size: a Lightning fit on images,
then the same fit on features computed once (`transferlab.training.feature_cache.pooled_features`).
Median epoch time after one warm-up epoch, validation included as in the pipeline. The
ratio uncached/cached is measured in this one run; the cache's one-off build time is
shown too. Usage: python benchmarks/feature_cache.py [--epochs 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import lightning as L
from _timing import EpochTimer
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from torch.utils.data import TensorDataset

from transferlab.core.config import as_dict, load_config
from transferlab.data.arrays import ImageArrayDataset
from transferlab.datasets.synthetic import make_split, render_params
from transferlab.training.feature_cache import pooled_features
from transferlab.training.loaders import FitData
from transferlab.training.runner import Recipe, build_module

REPO = Path(__file__).resolve().parents[1]


def median_epoch(module, train_set, val_set, batch_size: int, epochs: int) -> float:
    """One pass over the training set per epoch, validation included, as in the pipeline."""
    timer = EpochTimer()
    L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        use_distributed_sampler=False,
        callbacks=[timer],
    ).fit(module, datamodule=FitData(train_set, val_set, batch_size, seed=0))
    return statistics.median(timer.times[1:])


def cached(module, dataset) -> TensorDataset:
    backbone = module.net.backbone
    features, labels = pooled_features(backbone, dataset)
    return TensorDataset(features[backbone.stage_names[-1]], labels)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    data_cfg = OmegaConf.load(REPO / "conf/experiment/builtin.yaml")
    params = render_params(as_dict(data_cfg.render), 32)
    classes = list(data_cfg.targets.small_similar.classes)
    x_val, y_val = make_split("shapes", classes, 50, [0, 1, 1], params)
    table = Table(title=f"frozen regimes: uncached vs cached features, {os.cpu_count()} CPUs")
    for column in (
        "regime",
        "train images",
        "uncached s/epoch",
        "cached s/epoch",
        "uncached / cached",
        "cache build s",
    ):
        table.add_column(column, justify="left" if column == "regime" else "right")
    for per_class in (30, 500):
        x, y = make_split("shapes", classes, per_class, [0, 1, 0], params)
        train_set, val_set = ImageArrayDataset(x, y), ImageArrayDataset(x_val, y_val)
        for regime in ("freeze_all", "truncate_freeze"):
            cfg = load_config("finetune", [f"regime={regime}"], root=REPO)
            settings, batch = Recipe.for_regime(cfg, regime), cfg.finetune.batch_size
            L.seed_everything(0, verbose=False)
            uncached = median_epoch(
                build_module(cfg, settings, len(classes), args.epochs), train_set, val_set, batch, args.epochs
            )
            L.seed_everything(0, verbose=False)
            module = build_module(cfg, settings, len(classes), args.epochs)
            started = time.perf_counter()
            cached_train, cached_val = cached(module, train_set), cached(module, val_set)
            build = time.perf_counter() - started
            module.automatic_optimization = False
            fast = median_epoch(module, cached_train, cached_val, batch, args.epochs)
            table.add_row(
                f"{regime} ({settings.cut_at or 'all stages'})",
                str(len(y)),
                f"{uncached:.3f}",
                f"{fast:.4f}",
                f"{uncached / fast:.1f}x",
                f"{build:.2f}",
            )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
