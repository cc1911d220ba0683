"""Per-epoch time of frozen regimes trained on images (uncached) vs on cached features.

For freeze_all and truncate_freeze (regime configs from conf/, default model), on built-in
similar-target shapes at the small (30/class) and large (500/class) training sizes, with
50 validation images per class and the default batch size: a Lightning fit on images,
then the same fit on features computed once (`transferlab.training.frozen_features`).
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

from transferlab.config import load_config
from transferlab.data import ImageArrayDataset
from transferlab.synthetic import render_params
from transferlab.finetune import build_module
from transferlab.synthetic import make_split
from transferlab.training import cached_training_sets, loaders

REPO = Path(__file__).resolve().parents[1]


def median_epoch(module, train_set, val_set, batch_size: int, epochs: int) -> float:
    timer = EpochTimer()
    train, val = loaders(train_set, val_set, batch_size, seed=0)
    L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
              callbacks=[timer]).fit(module, train, val)
    return statistics.median(timer.times[1:])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    data_cfg = OmegaConf.load(REPO / "conf/experiment/builtin.yaml")
    params = render_params(OmegaConf.to_container(data_cfg.render), 32)
    classes = list(data_cfg.targets.small_similar.classes)
    x_val, y_val = make_split("shapes", classes, 50, [0, 1, 1], params)
    table = Table(title=f"frozen regimes: uncached vs cached features, {os.cpu_count()} CPUs")
    for column in ("regime", "train images", "uncached s/epoch", "cached s/epoch", "uncached / cached",
                   "cache build s"):
        table.add_column(column, justify="left" if column == "regime" else "right")
    for per_class in (30, 500):
        x, y = make_split("shapes", classes, per_class, [0, 1, 0], params)
        train_set, val_set = ImageArrayDataset(x, y), ImageArrayDataset(x_val, y_val)
        for regime, quadrant in (("freeze_all", "small_similar"), ("truncate_freeze", "small_different")):
            cfg = load_config("finetune", [f"quadrant={quadrant}", f"regime={regime}"], root=REPO)
            L.seed_everything(0, verbose=False)
            uncached = median_epoch(build_module(cfg, len(classes)), train_set, val_set,
                                    cfg.train.batch_size, args.epochs)
            L.seed_everything(0, verbose=False)
            module = build_module(cfg, len(classes))
            started = time.perf_counter()
            cached_train, cached_val = cached_training_sets(module, train_set, val_set)
            build = time.perf_counter() - started
            cached = median_epoch(module, cached_train, cached_val, cfg.train.batch_size, args.epochs)
            table.add_row(f"{regime} ({cfg.regime.cut_at or 'all stages'})", str(len(y)), f"{uncached:.3f}",
                          f"{cached:.4f}", f"{uncached / cached:.1f}x", f"{build:.2f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
