"""The pipeline's own small CNNs for 32 px images (pretrained here on the source data, or from a file).

Each factory names its stages from its arguments with the same function the registry reads, so a
stage name is written once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, List

from omegaconf import MISSING

from transferlab.models._registry import PIPELINE, Family, register


@dataclass
class SmallResNetArgs:
    widths: List[int] = MISSING


@dataclass
class SmallVGGArgs:
    widths: List[int] = MISSING


@dataclass
class SmallCNNArgs:
    channels: List[int] = MISSING
    hidden: List[int] = MISSING


def resnet_stage_names(args: Mapping[str, Any]) -> list[str]:
    return ["stem", *(f"stage{i}" for i in range(1, len(args["widths"]) + 1))]


def vgg_stage_names(args: Mapping[str, Any]) -> list[str]:
    return [f"block{i}" for i in range(1, len(args["widths"]) + 1)]


def cnn_stage_names(args: Mapping[str, Any]) -> list[str]:
    return ["block1", "block2", "fc1", "fc2"]


def small_resnet(widths: list[int] | tuple[int, ...] = (32, 64, 128), in_channels: int = 3):
    """A ResNet for 32 px inputs: a 3x3 stem with 2x2 max-pooling, then one BasicBlock per width
    (stride 2 after the first)."""
    from torch import nn

    from transferlab.models._backbone import Backbone, BasicBlock

    names = resnet_stage_names({"widths": widths})
    stem = nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(), nn.MaxPool2d(2)
    )
    stages: OrderedDict[str, nn.Module] = OrderedDict({names[0]: stem})
    channels = {names[0]: widths[0]}
    previous = widths[0]
    for index, (name, width) in enumerate(zip(names[1:], widths)):
        stages[name] = BasicBlock(previous, width, stride=1 if index == 0 else 2)
        channels[name] = width
        previous = width
    return Backbone(stages, channels)


def small_vgg(widths: list[int] | tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 3):
    """A 4-block CNN: each block is conv3x3-BatchNorm-ReLU-maxpool2 (32 px -> 2 px after four)."""
    from torch import nn

    from transferlab.models._backbone import Backbone

    stages: OrderedDict[str, nn.Module] = OrderedDict()
    previous = in_channels
    for name, width in zip(vgg_stage_names({"widths": widths}), widths):
        stages[name] = nn.Sequential(
            nn.Conv2d(previous, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2)
        )
        previous = width
    return Backbone(stages, dict(zip(vgg_stage_names({"widths": widths}), widths)))


def small_cnn(
    channels: list[int] | tuple[int, ...] = (6, 16),
    hidden: list[int] | tuple[int, ...] = (120, 84),
    image_size: int = 32,
    in_channels: int = 3,
):
    """The classic course CNN: (conv5x5-relu-maxpool) x2, then dense 120 -> 84."""
    from torch import nn

    from transferlab.models._backbone import Backbone

    c1, c2 = channels
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"image_size={image_size} is too small for small_cnn (allowed: >= 16)")
    b1, b2, f1, f2 = cnn_stage_names({})
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        {
            b1: nn.Sequential(nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2)),
            b2: nn.Sequential(nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2)),
            f1: nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden[0]), nn.ReLU()),
            f2: nn.Sequential(nn.Linear(hidden[0], hidden[1]), nn.ReLU()),
        }
    )
    return Backbone(stages, {b1: c1, b2: c2, f1: hidden[0], f2: hidden[1]})


def _pipeline_norm(args: Mapping[str, Any]):
    return PIPELINE


register(
    Family(
        "small_resnet",
        SmallResNetArgs,
        small_resnet,
        _pipeline_norm,
        names_stages=resnet_stage_names,
        doc="ResNet for 32 px: stem, one BasicBlock per width",
    )
)
register(
    Family(
        "small_vgg",
        SmallVGGArgs,
        small_vgg,
        _pipeline_norm,
        names_stages=vgg_stage_names,
        doc="conv-BN-ReLU-maxpool blocks",
    )
)
register(
    Family(
        "small_cnn",
        SmallCNNArgs,
        small_cnn,
        _pipeline_norm,
        names_stages=cnn_stage_names,
        takes_image_size=True,
        doc="the course CNN: two conv blocks, two dense layers",
    )
)
