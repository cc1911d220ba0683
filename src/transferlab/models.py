"""CNN backbones with ordered, named stages, and the network a regime trains.

A backbone is an ``nn.Sequential`` whose children are its stages, in order, with
``stage_channels`` giving each stage's output width. ``cut_at`` (a stage name) means the
same for every backbone: keep the stages up to and including it.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn


class Backbone(nn.Sequential):
    """Named stages in order; ``stage_channels[name]`` is that stage's output width."""

    def __init__(self, stages: "OrderedDict[str, nn.Module]", stage_channels: dict[str, int]):
        super().__init__(stages)
        self.stage_channels = dict(stage_channels)

    @property
    def stage_names(self) -> list[str]:
        return list(self._modules)

    def truncated(self, cut_at: str | None) -> "Backbone":
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
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def SmallResNet(widths: list[int] | tuple[int, ...] = (32, 64, 128), in_channels: int = 3) -> Backbone:
    """A ResNet for 32 px inputs: a 3x3 stem with 2x2 max-pooling, then one BasicBlock per width
    (stride 2 after the first)."""
    stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(),
                         nn.MaxPool2d(2))
    stages: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
    channels = {"stem": widths[0]}
    previous = widths[0]
    for index, width in enumerate(widths, start=1):
        stages[f"stage{index}"] = BasicBlock(previous, width, stride=1 if index == 1 else 2)
        channels[f"stage{index}"] = width
        previous = width
    return Backbone(stages, channels)


def SmallVGG(widths: list[int] | tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 3) -> Backbone:
    """A 4-block CNN: each block is conv3x3-BatchNorm-ReLU-maxpool2 (32 px -> 2 px after four)."""
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    previous = in_channels
    for index, width in enumerate(widths, start=1):
        stages[f"block{index}"] = nn.Sequential(nn.Conv2d(previous, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                                nn.ReLU(), nn.MaxPool2d(2))
        previous = width
    return Backbone(stages, {f"block{i}": w for i, w in enumerate(widths, start=1)})


def SmallCNN(channels: list[int] | tuple[int, ...] = (6, 16), hidden: list[int] | tuple[int, ...] = (120, 84),
             image_size: int = 32, in_channels: int = 3) -> Backbone:
    """The classic course CNN: (conv5x5-relu-maxpool) x2, then dense 120 -> 84."""
    c1, c2 = channels
    side = ((image_size - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"image_size={image_size} is too small for SmallCNN (allowed: >= 16)")
    stages: OrderedDict[str, nn.Module] = OrderedDict(
        block1=nn.Sequential(nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(2)),
        block2=nn.Sequential(nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2)),
        fc1=nn.Sequential(nn.Flatten(), nn.Linear(c2 * side * side, hidden[0]), nn.ReLU()),
        fc2=nn.Sequential(nn.Linear(hidden[0], hidden[1]), nn.ReLU()),
    )
    return Backbone(stages, {"block1": c1, "block2": c2, "fc1": hidden[0], "fc2": hidden[1]})


class Head(nn.Module):
    """Global average pooling (for feature maps), dropout, then a linear classifier, or with
    ``hidden`` a small MLP (linear-ReLU-dropout-linear)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0, hidden: int | None = None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.hidden = None if hidden is None else nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                                               nn.Dropout(dropout))
        self.fc = nn.Linear(in_features if hidden is None else hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        x = self.dropout(x)
        if self.hidden is not None:
            x = self.hidden(x)
        return self.fc(x)


class TransferNet(nn.Module):
    """A (possibly truncated) backbone followed by a new head."""

    def __init__(self, backbone: Backbone, head: Head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "vgg11_bn", "efficientnet_b0")


def _stages_by_resolution(modules: list[nn.Module], probe: torch.Tensor) -> list[list[nn.Module]]:
    """Group consecutive modules into stages that end where the spatial size changes next."""
    sizes = []
    with torch.no_grad():
        x = probe
        for module in modules:
            x = module(x)
            sizes.append(x.shape[-1])
    groups: list[list[nn.Module]] = [[]]
    for index, module in enumerate(modules):
        groups[-1].append(module)
        if index + 1 < len(modules) and sizes[index + 1] != sizes[index]:
            groups.append([])
    return groups


def _torchvision_stages(arch: str, model: nn.Module) -> "OrderedDict[str, nn.Module]":
    if arch.startswith("resnet"):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return OrderedDict(stem=stem, **{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)})
    features = list(model.features)
    if arch.startswith("vgg"):
        stages, current = OrderedDict(), []
        for module in features:
            current.append(module)
            if isinstance(module, nn.MaxPool2d):
                stages[f"block{len(stages) + 1}"] = nn.Sequential(*current)
                current = []
        return stages
    # mobilenet_v3_* / efficientnet_*: stem, stages by resolution, then the final 1x1 conv ("top").
    stem, body, top = features[0], features[1:-1], features[-1]
    was_training = model.training
    model.eval()
    probe = stem(torch.zeros(1, 3, 64, 64))
    groups = _stages_by_resolution(body, probe)
    model.train(was_training)
    stages = OrderedDict(stem=stem)
    for index, group in enumerate(groups, start=1):
        stages[f"stage{index}"] = nn.Sequential(*group)
    stages["top"] = top
    return stages


def imagenet_weights(arch: str):
    """torchvision's default ImageNet weights enum for ``arch``."""
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT


def TorchvisionBackbone(arch: str, weights: str | None = None) -> Backbone:
    """A torchvision classification model without its classifier, as ordered named stages.

    ``weights``: None (random init) or "imagenet" (torchvision's default ImageNet weights,
    from its cache; offline and not cached -> ValueError naming the file and the folder).
    """
    from torchvision.models import get_model

    if arch not in TORCHVISION_ARCHS:
        raise ValueError(f"unknown torchvision arch {arch!r} (allowed: {', '.join(TORCHVISION_ARCHS)})")
    if weights not in (None, "imagenet"):
        raise ValueError(f"unknown weights {weights!r} for {arch} (allowed: null, imagenet)")
    if weights is None:
        model = get_model(arch, weights=None)
    else:
        enum = imagenet_weights(arch)
        try:
            model = get_model(arch, weights=enum)
        except (OSError, RuntimeError) as err:  # URLError is an OSError; no network -> one clear line
            folder = Path(torch.hub.get_dir()) / "checkpoints"
            raise ValueError(f"cannot load ImageNet weights for {arch} from {enum.url} ({type(err).__name__}): "
                             f"download that file by hand and place it in {folder}/") from None
    stages = _torchvision_stages(arch, model)
    channels, x = {}, torch.zeros(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        for name, stage in stages.items():
            x = stage(x)
            channels[name] = x.shape[1]
    model.train()
    return Backbone(stages, channels)
