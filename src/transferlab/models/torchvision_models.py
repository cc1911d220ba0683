"""torchvision's classification models without their classifiers, as ordered named stages.

``pretrain.source: imagenet`` takes torchvision's ImageNet weights from its cache (``torch.hub``'s
checkpoints folder; downloaded when online): place the file there by hand on an offline machine.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from transferlab.models._registry import IMAGENET, Family, Pretrained, register

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_small", "vgg11_bn", "efficientnet_b0")


@dataclass
class TorchvisionArgs:
    arch: str = MISSING


def _torchvision_stages(arch: str, model):
    from torch import nn

    from transferlab.models._backbone import stages_by_resolution

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
    import torch

    stem, body, top = features[0], features[1:-1], features[-1]
    was_training = model.training
    model.eval()
    probe = stem(torch.zeros(1, 3, 64, 64))
    groups = stages_by_resolution(body, probe)
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


def torchvision_model(arch: str, weights: str | None = None):
    """torchvision's whole classification model ``arch``; ``weights``: None (random init) or "imagenet"
    (torchvision's default ImageNet weights, from its cache; offline and not cached -> ValueError
    naming the file and the folder)."""
    import torch
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


def backbone_of(arch: str, model):
    """``model`` without its classifier, as ordered named stages (sharing its modules and weights)."""
    from transferlab.models._backbone import measured_backbone

    backbone = measured_backbone(_torchvision_stages(arch, model), IMAGENET)
    model.train()
    return backbone


def torchvision_backbone(arch: str, weights: str | None = None):
    """A torchvision classification model without its classifier, as ordered named stages."""
    return backbone_of(arch, torchvision_model(arch, weights))


def _imagenet(args: Mapping[str, Any]) -> Pretrained:
    arch = args["arch"]
    return Pretrained(torchvision_backbone(arch, "imagenet"), {"weights_url": imagenet_weights(arch).url})


def _whole_model(args: Mapping[str, Any]):
    whole = torchvision_model(args["arch"], None)
    return whole, lambda: backbone_of(args["arch"], whole)


register(
    Family(
        "torchvision_backbone",
        TorchvisionArgs,
        torchvision_backbone,
        lambda args: IMAGENET,
        sources=("pipeline", "imagenet", "file"),
        imagenet=_imagenet,
        imagenet_note="torchvision's ImageNet weights (its cache, or a download)",
        whole_model=_whole_model,
        doc=f"torchvision's {', '.join(TORCHVISION_ARCHS)}",
    )
)
