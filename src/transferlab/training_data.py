"""Training and validation sets of one dataset, as the training stages read them."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from transferlab.augment import training_transform
from transferlab.config import DATASETS, paths
from transferlab.data import ImageArrayDataset, first_per_class, load_meta, load_split


def training_sets(cfg: DictConfig, dataset: str, train_per_class: int | None = None):
    """(train, val) datasets: augmented training rows (optionally the first N per class) and raw val."""
    where = paths(cfg)
    augmented = where["augmented"] / dataset
    meta = load_meta(augmented)
    x, y = load_split(augmented, "train", random_access=True)
    if train_per_class is not None:
        originals = meta["originals"]
        keep = first_per_class(y[:originals], train_per_class)
        rows = np.concatenate([keep + k * originals for k in range(meta["copies"] + 1)])
        x, y = x[rows], y[rows]
    x_val, y_val = load_split(where["raw"] / dataset, "val")
    seed = None if cfg.seed is None else cfg.seed * 100 + DATASETS.index(dataset)
    return ImageArrayDataset(x, y, training_transform(augmented, seed)), ImageArrayDataset(x_val, y_val)
