"""Prepared datasets on disk: one folder per dataset with uint8 arrays and a JSON card.

Layout: ``<folder>/x_<split>.npy`` (N, H, W, 3) uint8, ``y_<split>.npy`` (N,) int64, and
``card.json`` in data/raw (class names, counts, checksums, source: transferlab.prepare)
or ``meta.json`` in data/augmented. Arrays are memory-mapped when read.
"""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from transferlab.config import ConfigError

SPLITS = ("train", "val", "test")


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def save_split(folder: Path, split: str, x: np.ndarray, y: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"x_{split}.npy", np.ascontiguousarray(x, dtype=np.uint8))
    np.save(folder / f"y_{split}.npy", np.ascontiguousarray(y, dtype=np.int64))


def load_split(folder: Path, split: str, random_access: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Images memory-mapped (read-only) and labels in memory.

    ``random_access``: tell the kernel not to read ahead (MADV_RANDOM). A shuffled training
    epoch touches images in random order; with read-ahead, each page fault on a dataset
    larger than the page cache reads a large block that is evicted again before it is used
    (measured: hundreds of GB read per epoch of a 1.5 GB array under a 1 GB memory limit).
    """
    x_path = folder / f"x_{split}.npy"
    if not x_path.is_file():
        raise ConfigError(f"{x_path} not found: run the stage that makes it first (`dvc repro`)")
    images = np.load(x_path, mmap_mode="r")
    mapping = getattr(images, "_mmap", None)
    if random_access and mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)
    return images, np.load(folder / f"y_{split}.npy")


def load_card(folder: Path) -> dict:
    """The dataset card of a prepared dataset in data/raw (written by the download stage)."""
    return load_meta(folder, "card.json")


def load_meta(folder: Path, name: str = "meta.json") -> dict:
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the stage that makes it first (`dvc repro`)")
    return json.loads(path.read_text())


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, in their original order."""
    counts = np.bincount(labels)
    if per_class > counts.min():
        raise ConfigError(
            f"train_per_class={per_class} is larger than the data: the smallest class has {counts.min()} "
            f"training images (allowed: null or 1..{counts.min()})")
    keep = np.zeros(len(labels), dtype=bool)
    for cls in range(len(counts)):
        keep[np.flatnonzero(labels == cls)[:per_class]] = True
    return np.flatnonzero(keep)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC (or HWC) -> float32 NCHW (or CHW) scaled to [-1, 1]."""
    tensor = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))  # memmaps are read-only
    tensor = tensor.permute(0, 3, 1, 2) if tensor.dim() == 4 else tensor.permute(2, 0, 1)
    return tensor.float().div_(127.5).sub_(1.0)


class ImageArrayDataset(Dataset):
    """Images from a uint8 array, with an optional albumentations transform applied on the fly."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.labels, self.transform = images, torch.as_tensor(np.asarray(labels)), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = np.asarray(self.images[index])
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return to_tensor(image), self.labels[index]
