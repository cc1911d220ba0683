"""CNN backbones as ordered, named stages (``cut_at`` names one), the head a regime adds, and
``build_backbone`` that makes one from a conf/model file (``_target_`` names a factory here)."""

from __future__ import annotations

from typing import Any

from transferlab.models.backbones import Backbone, small_cnn, small_resnet, small_vgg
from transferlab.models.heads import Head, TransferNet
from transferlab.models.torchvision_backbones import TORCHVISION_ARCHS, imagenet_weights, torchvision_backbone

__all__ = [
    "Backbone",
    "Head",
    "TransferNet",
    "TORCHVISION_ARCHS",
    "build_backbone",
    "imagenet_weights",
    "small_cnn",
    "small_resnet",
    "small_vgg",
    "torchvision_backbone",
]


def build_backbone(model_cfg: dict[str, Any], image_size: int) -> Backbone:
    """Instantiate the configured backbone; a bad argument is a ValueError with the model's own message."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    if kwargs.get("_target_", "").endswith("small_cnn"):
        kwargs["image_size"] = image_size
    try:
        return instantiate(kwargs)
    except InstantiationException as err:  # Hydra wraps the constructor's error in a multi-line text
        cause = err.__cause__
        raise ValueError(str(cause) if cause else str(err).splitlines()[0]) from None
