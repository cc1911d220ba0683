"""Training and validation sets of one dataset, as the training stages read them.

data/augmented/<dataset>/x_train.npy holds the N original training images followed by K
augmented copies of them (``augment.copies``; meta.json says K and N):

- a regime that trains its backbone sees the N originals with the dataset's augmentation
  pipeline applied on the fly (new views every epoch, seeded per epoch);
- a frozen regime trains its head on cached features, which must be computed once, so it
  sees the N x (K + 1) materialised rows (no randomness after the cache is built).
"""

from __future__ import annotations

import numpy as np

from transferlab.core.artifacts import AugmentMeta
from transferlab.core.names import DATASETS, seed_words
from transferlab.core.paths import ProjectPaths
from transferlab.data.arrays import ImageArrayDataset, first_per_class, load_split
from transferlab.data.augmentation import build_pipeline, saved_pipeline


def training_sets(
    cfg, dataset: str, materialised: bool, seed: int | None = 0, train_per_class: int | None = None
) -> tuple[ImageArrayDataset, ImageArrayDataset]:
    """(train, val) datasets of ``dataset``; ``materialised``: the stored copies instead of on-the-fly views."""
    where = ProjectPaths.of(cfg)
    augmented = where.augmented_dataset(dataset)
    meta = AugmentMeta.load(where.augment_meta(dataset))
    x, y = load_split(augmented, "train", random_access=True)
    originals, copies = meta.originals, meta.copies
    keep = np.arange(originals) if train_per_class is None else first_per_class(y[:originals], train_per_class)
    blocks = copies + 1 if materialised else 1
    rows = np.concatenate([keep + k * originals for k in range(blocks)])
    if len(rows) != len(x):
        x, y = x[rows], y[rows]
    transforms = saved_pipeline(augmented)
    words = seed_words(seed if seed is not None else 0, DATASETS.index(dataset) if dataset in DATASETS else dataset)
    item_seed = int(np.random.SeedSequence(words).generate_state(1)[0])
    transform = None if materialised or not transforms else build_pipeline(transforms)
    x_val, y_val = load_split(where.raw_dataset(dataset), "val")
    return ImageArrayDataset(x, y, transform, item_seed), ImageArrayDataset(x_val, y_val)
