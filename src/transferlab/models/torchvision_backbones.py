"""torchvision's classification models without their classifiers, as ordered named stages."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from transferlab.models.backbones import Backbone

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


def _torchvision_stages(arch: str, model: nn.Module) -> OrderedDict[str, nn.Module]:
    if arch.startswith("resnet"):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        return OrderedDict(stem=stem, **{f"layer{i}": getattr(model, f"layer{i}") for i in range(1, 5)})
    features = list(model.features)
    if arch.startswith("vgg"):
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        current: list[nn.Module] = []
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


def torchvision_model(arch: str, weights: str | None = None) -> nn.Module:
    """torchvision's whole classification model ``arch``; ``weights``: None (random init) or "imagenet"
    (torchvision's default ImageNet weights, from its cache; offline and not cached -> ValueError
    naming the file and the folder)."""
    from torchvision.models import get_model

    if arch not in TORCHVISION_ARCHS:
        raise ValueError(f"unknown torchvision arch {arch!r} (allowed: {', '.join(TORCHVISION_ARCHS)})")
    if weights not in (None, "imagenet"):
        raise ValueError(f"unknown weights {weights!r} for {arch} (allowed: null, imagenet)")
    if weights is None:
        return get_model(arch, weights=None)
    enum = imagenet_weights(arch)
    try:
        return get_model(arch, weights=enum)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; no network -> one clear line
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        raise ValueError(
            f"cannot load ImageNet weights for {arch} from {enum.url} ({type(err).__name__}): "
            f"download that file by hand and place it in {folder}/"
        ) from None


def backbone_of(arch: str, model: nn.Module) -> Backbone:
    """``model`` without its classifier, as ordered named stages (sharing its modules and weights)."""
    stages = _torchvision_stages(arch, model)
    channels, x = {}, torch.zeros(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        for name, stage in stages.items():
            x = stage(x)
            channels[name] = x.shape[1]
    model.train()
    return Backbone(stages, channels)


def torchvision_backbone(arch: str, weights: str | None = None) -> Backbone:
    """A torchvision classification model without its classifier, as ordered named stages."""
    return backbone_of(arch, torchvision_model(arch, weights))
