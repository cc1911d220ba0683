"""What every family's network is: a backbone of ordered, named stages, and its input normalisation.

A backbone is an ``nn.Sequential`` whose children are its stages, in order, with
``stage_channels`` giving each stage's output width. ``cut_at`` (a stage name) means the
same for every backbone: keep the stages up to and including it. Its first operation turns the
pipeline's tensors (pixel / 127.5 - 1) into what its weights expect (``input_norm``), so every path
into the network (training, cached features, the advisor's probes, evaluation, the registered model)
normalises the same way without knowing the network.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from transferlab.models._registry import PIPELINE, InputNorm


class Backbone(nn.Sequential):
    """Named stages in order; ``stage_channels[name]`` is that stage's output width; ``input_norm`` what the
    weights expect (applied first; nothing is done for the pipeline's own normalisation, so those
    networks compute exactly what they did before it existed)."""

    def __init__(
        self, stages: OrderedDict[str, nn.Module], stage_channels: dict[str, int], input_norm: InputNorm = PIPELINE
    ):
        super().__init__(stages)
        self.stage_channels = dict(stage_channels)
        self.input_norm = input_norm
        scale, shift = input_norm.from_pipeline()
        # Not persistent: backbone.pt holds the weights only; the normalisation is the family's.
        self.register_buffer("input_scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Pipeline tensors (pixel / 127.5 - 1) -> this network's input normalisation."""
        if self.input_norm.is_pipeline:
            return x
        return x * self.input_scale + self.input_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        for stage in self:
            x = stage(x)
        return x

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
        return Backbone(
            OrderedDict((n, self._modules[n]) for n in keep),
            {n: self.stage_channels[n] for n in keep},
            self.input_norm,
        )

    @property
    def out_channels(self) -> int:
        return self.stage_channels[self.stage_names[-1]]

    def pooled_stage_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each stage's output, globally average-pooled to (N, channels), from one forward pass:
        what a head after a cut at that stage sees (the cut sweep caches all of them at once)."""
        pooled = {}
        x = self.normalize(x)
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


def stages_by_resolution(modules: list[nn.Module], probe: torch.Tensor) -> list[list[nn.Module]]:
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


def measured_backbone(stages: OrderedDict[str, nn.Module], input_norm: InputNorm, side: int = 64) -> Backbone:
    """A backbone whose stage widths are read off one forward pass of a ``side`` px probe."""
    backbone = Backbone(stages, {name: 0 for name in stages}, input_norm)
    was_training = backbone.training
    backbone.eval()
    x = torch.zeros(1, 3, side, side)
    with torch.no_grad():
        for name, stage in stages.items():
            x = stage(x)
            backbone.stage_channels[name] = x.shape[1]
    backbone.train(was_training)
    return backbone
