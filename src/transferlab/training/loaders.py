"""Data loaders whose randomness is a function of (seed, epoch) alone.

A resumed fit must repeat exactly what the uninterrupted one would have done, so nothing
random may depend on how many epochs this process has run: ``EpochSampler`` reads epoch k's
images from a stream of passes over the data, each pass in an order drawn from (seed, pass),
so what epoch k gets follows from (seed, k) (Lightning calls ``set_epoch`` before every
epoch, also after restoring a checkpoint). It hands the dataset ``(epoch, index)`` keys, from
which it seeds the on-the-fly augmentation (``data.arrays.ImageArrayDataset``). An epoch is
one pass by default, or a fixed number of images (``items_per_epoch``: the fine-tuning budget,
see ``training.budget``).

Under DDP the sampler shards the order itself (every rank draws the same order and takes
every world_size-th item, padded to equal length so ranks step together); Lightning's own
sampler replacement is switched off (``use_distributed_sampler=False``). Validation is
sharded without padding: Lightning's DistributedSampler pads so every rank gets the same
number of batches, which counts some images twice in val/acc, the number the best
checkpoint is chosen by. Each rank takes every world_size-th image once; torchmetrics sums
the ranks' counts.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from transferlab.core.names import seed_words
from transferlab.data.arrays import collate_images
from transferlab.training.feature_cache import EpochBatches

VAL_BATCH = 256


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence(seed_words(seed, epoch)).generate_state(1)[0]))
    return torch.randperm(n, generator=generator)


class EpochSampler(Sampler):
    """Yields ``(epoch, index)``: epoch k's share of the pass stream; this rank's share under DDP.

    ``items_per_epoch``: images per epoch and rank (None: one pass over the data, padded so that
    every rank steps the same number of times). ``whole_epoch``: yield the rank's whole epoch as one
    item (cached features, ``EpochBatches``).
    """

    def __init__(
        self,
        n: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        whole_epoch: bool = False,
        items_per_epoch: int | None = None,
    ):
        self.n, self.seed, self.rank, self.world, self.whole_epoch = n, seed, rank, world, whole_epoch
        self.one_pass = items_per_epoch is None
        self.per_rank: int = math.ceil(n / world) if items_per_epoch is None else items_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> list[int]:
        if self.one_pass:  # padded by wrapping under DDP
            order = epoch_order(self.n, self.seed, self.epoch).tolist()
            order = (order * 2)[: self.per_rank * self.world]
        else:  # a fixed number of images: read on through a stream of shuffled passes
            start, wanted = self.epoch * self.per_rank * self.world, self.per_rank * self.world
            order, pass_index, offset = [], start // self.n, start % self.n
            while len(order) < wanted:
                order += epoch_order(self.n, self.seed, pass_index).tolist()[offset : offset + wanted - len(order)]
                pass_index, offset = pass_index + 1, 0
        return order[self.rank :: self.world]

    def __iter__(self):
        order = self._indices()
        if self.whole_epoch:
            yield order
        else:
            yield from ((self.epoch, i) for i in order)

    def __len__(self) -> int:
        return 1 if self.whole_epoch else self.per_rank


class ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``, in order, each exactly once (no padding)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class FitData(L.LightningDataModule):
    """The loaders of one fit, built once the process group exists (the rank is known then)."""

    def __init__(self, train_set, val_set, batch_size: int, seed: int, steps_per_epoch: int | None = None):
        super().__init__()
        self.train_set, self.val_set, self.batch_size, self.seed = train_set, val_set, batch_size, seed
        self.steps_per_epoch = steps_per_epoch  # None: an epoch is one pass over the training set

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        cached = isinstance(self.train_set, TensorDataset)
        items = None if self.steps_per_epoch is None else self.steps_per_epoch * self.batch_size
        sampler = EpochSampler(len(self.train_set), self.seed, rank, world, whole_epoch=cached, items_per_epoch=items)
        if cached:
            return DataLoader(EpochBatches(self.train_set, self.batch_size), batch_size=None, sampler=sampler)
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_images)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        batch = max(self.batch_size, VAL_BATCH)
        if isinstance(self.val_set, TensorDataset):
            from torch.utils.data import BatchSampler

            sampler = BatchSampler(ShardSampler(len(self.val_set), rank, world), batch, drop_last=False)
            return DataLoader(self.val_set, batch_size=None, sampler=sampler)
        return DataLoader(
            self.val_set,
            batch_size=batch,
            sampler=ShardSampler(len(self.val_set), rank, world),
            collate_fn=collate_images,
        )
