"""How well a pretrained network's frozen features separate a folder's classes, per image size: a linear probe.

For each size: the same images (``--train`` and ``--val`` per class, drawn once with ``--seed`` from
``<folder>/<class>/*``), decoded as `download` decodes them (transferlab.datasets.prepare.decode_bytes:
EXIF orientation, RGB, shorter side resized, centre crop), the network's pooled last-stage features
(transferlab.training.feature_cache.pooled_features, the feature cache's own pass, with the network's
input normalisation), then scikit-learn's logistic regression (standardised features, C=1) fitted on
train and scored on val. Printed: validation accuracy and seconds of feature extraction per size.

It answers which image size to train at when a step costs more at each size (benchmarks/model_throughput.py):
no training, no augmentation, no tuning, so the numbers are a floor for freeze_all, not its result.

Usage: python benchmarks/linear_probe_sizes.py <folder> [--model efficientnet_lite0] [--sizes 64 96 128 160 224]
       [--train 30] [--val 50] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def pick(folder: Path, train: int, val: int, seed: int) -> tuple[list[Path], list[int], list[Path], list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    picked: tuple[list[Path], list[int], list[Path], list[int]] = ([], [], [], [])
    for label, class_folder in enumerate(classes):
        files = sorted(f for f in class_folder.iterdir() if f.is_file() and not f.name.startswith("."))
        if len(files) < train + val:
            raise SystemExit(f"{class_folder}: {len(files)} files, fewer than --train {train} + --val {val}")
        order = rng.permutation(len(files))
        picked[0].extend(files[i] for i in order[:train])
        picked[1].extend([label] * train)
        picked[2].extend(files[i] for i in order[train : train + val])
        picked[3].extend([label] * val)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 160, 224])
    parser.add_argument("--train", type=int, default=30)
    parser.add_argument("--val", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from transferlab.core.config import as_dict
    from transferlab.data.arrays import ImageArrayDataset
    from transferlab.datasets.prepare import decode_bytes
    from transferlab.models import family_of, model_args
    from transferlab.training.feature_cache import pooled_features

    torch.set_num_threads(args.threads)
    model = as_dict(OmegaConf.load(REPO / "conf" / "model" / f"{args.model}.yaml"))
    model["name"] = args.model
    family = family_of(model)
    if family.imagenet is None:
        raise SystemExit(f"--model {args.model}: its family has no ImageNet weights (pretrain.source: imagenet)")
    backbone = family.imagenet(model_args(model)).backbone  # the same weights at every size
    train_files, train_labels, val_files, val_labels = pick(args.folder, args.train, args.val, args.seed)
    print(f"{args.folder}: {len(set(train_labels))} classes, {args.train} train / {args.val} val per class")
    for size in args.sizes:
        started = time.perf_counter()
        features = []
        for files, labels in ((train_files, train_labels), (val_files, val_labels)):
            images = np.stack([decode_bytes(f.read_bytes(), size)[0] for f in files])
            pooled, _ = pooled_features(backbone, ImageArrayDataset(images, np.array(labels)), channels_last=True)
            features.append(next(iter(pooled.values())).numpy())
        seconds = time.perf_counter() - started
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        probe.fit(features[0], train_labels)
        accuracy = float(probe.score(features[1], val_labels))
        print(f"{args.model} at {size:>3} px: linear probe val acc {accuracy:.3f} ({seconds:.1f} s of features)")


if __name__ == "__main__":
    main()
