"""Stage `augment`: each dataset's augmentation pipeline, the targets' augmented copies, a preview.

Each dataset gets the pipeline its conf/dataset file names (`augment`, overridable per
experiment entry; conf/augment/<name>.yaml, an ordered albumentations list). Output per
dataset in data/augmented/<dataset>/: x_train.npy holds the N original training images
followed by K augmented copies (`augment.copies` for the targets, whose frozen regimes
train on cached features of these rows; 0 for the source, which pretrains on the fly),
pipeline.yaml (the transforms the training stages apply on the fly) and meta.json.
reports/augment/<dataset>.png shows one row per class: an image and augmented views of it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.config import dataset_file, load_config
from transferlab.core.files import staged_dir
from transferlab.core.names import DATASETS, seed_words
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, run_stage

CHUNK = 8192


def pipeline_name(cfg: DictConfig, root: Path, dataset: str) -> str:
    """The experiment entry's `augment`, else the dataset file's, else none."""
    use = cfg.experiment.source if dataset == "source" else cfg.experiment.targets[dataset]
    if use is None:  # an experiment without source images
        return "none"
    if use.augment is not None:
        return use.augment
    return dataset_file(root, cfg, use.dataset).get("augment", "none")


def write_training_rows(folder: Path, images, labels, pipeline, copies: int) -> None:
    """x_train.npy: the originals, then ``copies`` augmented blocks of them, written through a
    memory map one chunk at a time (a dataset larger than memory stays out of memory)."""
    import numpy as np
    from numpy.lib.format import open_memmap

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


def preview(images, labels, classes: list[str], pipeline, title: str, path: Path, views: int = 6) -> None:
    """One row per class: its first training image, then ``views`` augmented versions of it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(
        len(classes), views + 1, figsize=((views + 1) * 1.0 + 1.2, len(classes) * 1.0 + 0.5), squeeze=False
    )
    for row, name in enumerate(classes):
        original = np.asarray(images[int(np.flatnonzero(labels == row)[0])])
        for col in range(views + 1):
            shown = original if col == 0 or pipeline is None else pipeline(image=original)["image"]
            axes[row, col].imshow(shown, interpolation="nearest")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    axes[0, 0].set_title("original", fontsize=8)
    axes[0, 1].set_title("augmented views" if pipeline is not None else "(no augmentation)", fontsize=8, loc="left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str]) -> None:
    cfg = load_config("augment", argv)
    where = ProjectPaths.of(cfg)
    root = where.root
    from transferlab.data.augmentation import pipeline_config

    plans = {}
    for dataset in DATASETS:  # every pipeline checked before any work
        name = pipeline_name(cfg, root, dataset)
        plans[dataset] = (name, pipeline_config(root, name))
    inputs = where.dataset_inputs(DATASETS, augmented=False)
    with prepared("augment", inputs, [where.augmented, where.augment_previews()]):
        with heavy_imports():
            import numpy as np
            from omegaconf import OmegaConf

            from transferlab.core.artifacts import AugmentMeta, DatasetCard
            from transferlab.core.config import save_config
            from transferlab.core.files import write_text
            from transferlab.data.arrays import load_split
            from transferlab.data.augmentation import PIPELINE_FILE, build_pipeline
        with staged_dir(where.augmented) as staging, staged_dir(where.augment_previews()) as previews:
            for dataset, (name, transforms) in plans.items():
                card = DatasetCard.load(where.card(dataset))
                folder = staging / dataset
                folder.mkdir()
                if not card.counts["train"]:  # no source images (data/raw/source/card.json says why)
                    AugmentMeta(classes=[], copies=0, originals=0, pipeline=name).save(folder / "meta.json")
                    print(f"{dataset}: no images ({card.source.get('why', 'none')})")
                    continue
                x, y = load_split(where.raw_dataset(dataset), "train")
                copies = cfg.augment.copies if dataset != "source" and transforms else 0
                seed = int(np.random.SeedSequence(seed_words(cfg.seed or 0, dataset, "copies")).generate_state(1)[0])
                pipeline = build_pipeline(transforms, seed=seed) if transforms else None
                write_training_rows(folder, x, y, pipeline, copies)
                write_text(folder / PIPELINE_FILE, OmegaConf.to_yaml({"name": name, "transforms": transforms}))
                AugmentMeta(classes=card.classes, copies=copies, originals=int(len(y)), pipeline=name).save(
                    folder / "meta.json"
                )
                preview(
                    x,
                    y,
                    card.classes,
                    build_pipeline(transforms, seed=seed) if transforms else None,
                    f"{dataset} ({card.dataset}): augmentation '{name}'",
                    previews / f"{dataset}.png",
                )
                print(
                    f"{dataset}: augmentation '{name}', {len(y)} training images + {copies} augmented copies "
                    f"-> {len(y) * (copies + 1)}"
                )
            save_config(cfg, staging / "config.yaml")


if __name__ == "__main__":
    run_stage("augment", main)
