"""Frozen regimes train only a head, so the frozen part's output is computed once, not every epoch.

The head's first operation is global average pooling, so a stage's pooled output (N, C) is
all it needs: training the head on cached pooled features is the same computation as on
the images (tests/test_feature_cache.py). One forward pass gives every stage's pooled output
at once, which is what the cut sweep trains its heads on.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from transferlab.data.arrays import collate_images
from transferlab.models import Backbone

INFERENCE_BATCH = 512


@torch.inference_mode()
def pooled_features(
    backbone: Backbone, dataset, stages: list[str] | None = None, channels_last: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({stage: pooled outputs (N, C)} for ``stages`` (default: the last), labels (N,)) of every row."""
    backbone = backbone.eval()
    wanted = stages or [backbone.stage_names[-1]]
    features: dict[str, list[torch.Tensor]] = {name: [] for name in wanted}
    labels = []
    # Its own generator: a DataLoader without one draws its base seed from the global RNG,
    # which would shift every later random draw against the uncached path.
    for images, targets in DataLoader(
        dataset, batch_size=INFERENCE_BATCH, shuffle=False, collate_fn=collate_images, generator=torch.Generator()
    ):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pooled = backbone.pooled_stage_outputs(images)
        for name in wanted:
            features[name].append(pooled[name])
        labels.append(targets)
    return {name: torch.cat(parts) for name, parts in features.items()}, torch.cat(labels)


class EpochBatches:
    """Cached features for one loader item per epoch: indexed with the epoch's shuffled order
    (all rows), it returns that order's features split into (features, labels) batches."""

    def __init__(self, tensors: TensorDataset, batch_size: int):
        self.tensors, self.batch_size = tensors, batch_size

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, order: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        features, labels = self.tensors[order]
        return list(zip(features.split(self.batch_size), labels.split(self.batch_size)))
