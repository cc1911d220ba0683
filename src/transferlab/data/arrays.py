"""Prepared datasets on disk: one folder per dataset with uint8 arrays and a JSON card.

Layout: ``<folder>/x_<split>.npy`` (N, H, W, 3) uint8, ``y_<split>.npy`` (N,) int64, and
``card.json`` in data/raw or ``meta.json`` in data/augmented (``core.artifacts.DatasetCard`` and
``AugmentMeta``). Arrays are memory-mapped when read.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

from transferlab.core.errors import ConfigError
from transferlab.core.names import seed_words


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
    x_path, y_path = folder / f"x_{split}.npy", folder / f"y_{split}.npy"
    if not x_path.is_file() or not y_path.is_file():
        raise ConfigError(
            f"{x_path if not x_path.is_file() else y_path} not found: run the stage that makes it first (`dvc repro`)"
        )
    try:
        images = np.load(x_path, mmap_mode="r")
        labels = np.load(y_path)
    except (ValueError, OSError, EOFError) as err:
        raise ConfigError(
            f"{folder}/{split} arrays cannot be read ({str(err).splitlines()[0]}): the file is "
            f"truncated or corrupt; re-run the stage that makes it (`dvc repro -f <stage>`)"
        ) from None
    if len(images) != len(labels):
        raise ConfigError(
            f"{x_path} has {len(images)} images but {y_path} {len(labels)} labels: re-run the stage that makes them"
        )
    mapping = getattr(images, "_mmap", None)
    if random_access and mapping is not None and hasattr(mmap, "MADV_RANDOM"):
        mapping.madvise(mmap.MADV_RANDOM)
    return images, labels


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, in their original order."""
    counts = np.bincount(labels)
    if per_class > counts.min():
        raise ConfigError(
            f"finetune.train_per_class={per_class} is larger than the data: the smallest class has {counts.min()} "
            f"training images (allowed: null or 1..{counts.min()})"
        )
    keep = np.zeros(len(labels), dtype=bool)
    for cls in range(len(counts)):
        keep[np.flatnonzero(labels == cls)[:per_class]] = True
    return np.flatnonzero(keep)


def to_tensor(images: np.ndarray):
    """uint8 NHWC (or HWC) -> float32 NCHW (or CHW) scaled to [-1, 1] (the deployable model does the same).

    The permuted NHWC batch is already in channels-last memory format, the one the convolutions
    want (training.trainer), so no copy is made to get there."""
    import torch

    tensor = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))  # memmaps are read-only
    tensor = tensor.permute(0, 3, 1, 2) if tensor.dim() == 4 else tensor.permute(2, 0, 1)
    return tensor.float().div_(127.5).sub_(1.0)


def collate_images(items):
    """A batch of (uint8 HWC image, label) items as (float NCHW images, labels): converted once per
    batch instead of once per image (per-image tensors cost 20 ms of every 65 ms step of the default
    model on the 2-core CPU)."""
    import torch

    images, labels = zip(*items)
    return to_tensor(np.stack(images)), torch.stack(labels)


class ImageArrayDataset:
    """Images from a uint8 array, with an optional albumentations transform applied on the fly; items are
    (uint8 HWC image, label), batched by ``collate_images``.

    Indexed by an int (no augmentation randomness involved) or by ``(epoch, index)`` from
    ``transferlab.training.loaders.EpochSampler``: the transform is then re-seeded from
    (``seed``, epoch, worker) at the first item of each epoch, so an epoch's augmentations
    are the same whether training ran straight through or resumed at that epoch.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None, seed: int = 0):
        import torch

        self.images, self.labels, self.transform, self.seed = (
            images,
            torch.as_tensor(np.asarray(labels)),
            transform,
            seed,
        )
        self._seeded_epoch: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (None, key)
        image = np.asarray(self.images[index])
        if self.transform is not None:
            if epoch is not None and epoch != self._seeded_epoch:
                self.transform.set_random_seed(
                    np.random.SeedSequence(seed_words(self.seed, epoch, _worker_id())).generate_state(1)[0].item()
                )
                self._seeded_epoch = epoch
            image = self.transform(image=image)["image"]
        return image, self.labels[index]  # a DataLoader with collate_images makes the batch


def _worker_id() -> int:
    import torch.utils.data

    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id
