"""Stage `augment`: the albumentations pipeline, augmented training data and a preview.

The pipeline is an `albumentations.Compose` of the ordered transform list in
conf/augment/<name>.yaml, each entry instantiated with Hydra. With `augment.copies = K`
> 0, data/augmented/<dataset>/x_train.npy holds the original training images followed by
K seeded augmented copies (blocks of N rows each); with K = 0 it holds the originals and
the training stages apply the same pipeline on the fly (pipeline.yaml beside it).
"""

from __future__ import annotations

import shutil

import albumentations as A
import numpy as np
from hydra.utils import instantiate
from numpy.lib.format import open_memmap
from omegaconf import OmegaConf

from transferlab.cli import run_stage
from transferlab.config import DATASETS, ConfigError, load_config, paths, save_config
from transferlab.data import load_card, load_meta, load_split, write_json

PIPELINE_FILE = "pipeline.yaml"
CHUNK = 8192


def build_pipeline(transforms, seed: int | None = None) -> A.Compose:
    """An albumentations Compose of the configured transforms, in order."""
    try:
        steps = [instantiate(t) for t in transforms]
    except Exception as err:
        raise ConfigError(f"cannot build augmentation pipeline: {str(err).splitlines()[0]}") from None
    return A.Compose(steps, seed=seed)


def write_training_rows(folder, images: np.ndarray, labels: np.ndarray, pipeline: A.Compose, copies: int) -> None:
    """x_train.npy: the originals, then ``copies`` augmented blocks of them, written through a
    memory map one chunk at a time (a dataset larger than memory stays out of memory)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    out = open_memmap(folder / "x_train.npy", mode="w+", dtype=np.uint8, shape=(n * (copies + 1), *images.shape[1:]))
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        out[start:stop] = images[start:stop]
    for k in range(1, copies + 1):
        for i in range(n):
            out[k * n + i] = pipeline(image=np.asarray(images[i]))["image"]
    out.flush()
    del out
    np.save(folder / "y_train.npy", np.tile(np.asarray(labels, dtype=np.int64), copies + 1))


def preview(images: np.ndarray, pipeline: A.Compose, path, rows: int = 8, views: int = 7) -> None:
    """A grid: each row is one image, then ``views`` augmented versions of it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, views + 1, figsize=((views + 1) * 1.1, rows * 1.1))
    for r in range(rows):
        original = np.asarray(images[r])
        for c in range(views + 1):
            shown = original if c == 0 else pipeline(image=original)["image"]
            axes[r, c].imshow(shown, interpolation="nearest")
            axes[r, c].axis("off")
        axes[r, 0].set_title("original" if r == 0 else "", fontsize=7)
    fig.suptitle("augmentation preview (row: one source image; columns: augmented views)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> None:
    cfg = load_config("augment", argv)
    where = paths(cfg)
    transforms = cfg.augment.transforms
    copies = cfg.augment.copies
    if copies > 0 and len(transforms) == 0:
        raise ConfigError(f"augment.copies={copies} needs a non-empty transform list (augment.name={cfg.augment.name})")
    build_pipeline(transforms)  # fail on a bad transform before any work
    out_root = where["augmented"]
    if out_root.exists():
        shutil.rmtree(out_root)
    for index, name in enumerate(DATASETS):
        meta = load_card(where["raw"] / name)
        x, y = load_split(where["raw"] / name, "train")
        pipeline = build_pipeline(transforms, seed=None if cfg.seed is None else cfg.seed * 100 + index)
        folder = out_root / name
        write_training_rows(folder, x, y, pipeline, copies)
        (folder / PIPELINE_FILE).write_text(OmegaConf.to_yaml(OmegaConf.create({"transforms": transforms})))
        write_json(folder / "meta.json", {"classes": meta["classes"], "copies": copies, "originals": int(len(y)),
                                          "on_the_fly": copies == 0 and len(transforms) > 0})
        print(f"{name}: {len(y)} training images + {copies} augmented copies -> {len(y) * (copies + 1)}")
    save_config(cfg, out_root / "config.yaml")
    preview_path = where["reports"] / "augment_preview.png"
    preview_path.parent.mkdir(parents=True, exist_ok=True)
    x, _ = load_split(where["raw"] / "source", "train")
    preview(x, build_pipeline(transforms, seed=cfg.seed), preview_path)


def training_transform(folder, seed: int | None) -> A.Compose | None:
    """The seeded on-the-fly pipeline for a dataset in data/augmented, or None when materialised.

    DataLoader workers re-seed their copy (transferlab.training.seed_worker_transform).
    """
    meta = load_meta(folder)
    if not meta["on_the_fly"]:
        return None
    return build_pipeline(OmegaConf.load(folder / PIPELINE_FILE).transforms, seed=seed)


if __name__ == "__main__":
    run_stage("augment", main)
