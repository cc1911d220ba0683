"""CNN backbones with ordered, named stages.

A backbone is an ``nn.Sequential`` whose children are its stages, in order, with
``stage_channels`` giving each stage's output width. ``cut_at`` (a stage name) means the
same for every backbone: keep the stages up to and including it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class Backbone(nn.Sequential):
    """Named stages in order; ``stage_channels[name]`` is that stage's output width."""

    def __init__(self, stages: OrderedDict[str, nn.Module], stage_channels: dict[str, int]):
        super().__init__(stages)
        self.stage_channels = dict(stage_channels)

    @property
    def stage_names(self) -> list[str]:
        return list(self._modules)

    def truncated(self, cut_at: str | None) -> Backbone:
        """The stages up to and including ``cut_at`` (all stages when None), sharing weights."""
        names = self.stage_names
        if cut_at is None:
            return self
        if cut_at not in names:
            raise ValueError(f"unknown cut_at {cut_at!r} (allowed: {', '.join(names)})")
        keep = names[: names.index(cut_at) + 1]
        return Backbone(OrderedDict((n, self._modules[n]) for n in keep), {n: self.stage_channels[n] for n in keep})

    @property
    def out_channels(self) -> int:
        return self.stage_channels[self.stage_names[-1]]

    def pooled_stage_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each stage's output, globally average-pooled to (N, channels), from one forward pass:
        what a head after a cut at that stage sees (the cut sweep caches all of them at once)."""
        pooled = {}
        for name, stage in self.named_children():
            x = stage(x)
            pooled[name] = x.mean(dim=(2, 3)) if x.dim() == 4 else x
        return pooled


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a (projected when needed) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def small_resnet(widths: list[int] | tuple[int, ...] = (32, 64, 128), in_channels: int = 3) -> Backbone:
    """A ResNet for 32 px inputs: a 3x3 stem with 2x2 max-pooling, then one BasicBlock per width
    (stride 2 after the first)."""
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(2)
    )
    stages: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
    channels = {"stem": widths[0]}
    previous = widths[0]
    for index, width in enumerate(widths, start=1):
        stages[f"stage{index}"] = BasicBlock(previous, width, stride=1 if index == 1 else 2)
        channels[f"stage{index}"] = width
        previous = width
    return Backbone(stages, channels)


def small_vgg(widths: list[int] | tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 3) -> Backbone:
    """A 4-block CNN: each block is conv3x3-BatchNorm-ReLU-maxpool2 (32 px -> 2 px after four)."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    previous = in_channels
    for index, width in enumerate(widths, start=1):
        stages[f"block{index}"] = nn.Sequential(
            nn.Conv2d(previous, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
        )
        previous = width
    return Backbone(stages, {f"block{i}": w for i, w in enumerate(widths, start=1)})


def small_cnn(
    channels: list[int] | tuple[int, ...] = (6, 16),
    hidden: list[int] | tuple[int, ...] = (120, 84),
    image_size: int = 32,
    in_channels: int = 3,
) -> Backbone:
    """The classic course CNN: (conv5x5-relu-maxpool) x2, then dense 120 -> 84."""
    c1, c2 = channels
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"image_size={image_size} is too small for small_cnn (allowed: >= 16)")
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        block1=nn.Sequential(nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2)),
        block2=nn.Sequential(nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2)),
        fc1=nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden[0]), nn.ReLU()),
        fc2=nn.Sequential(nn.Linear(hidden[0], hidden[1]), nn.ReLU()),
    )
    return Backbone(stages, {"block1": c1, "block2": c2, "fc1": hidden[0], "fc2": hidden[1]})
