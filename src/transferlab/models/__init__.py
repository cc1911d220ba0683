"""CNN backbones as ordered, named stages (``cut_at`` names one), the head a regime adds, and the registry
of model families (``_registry``): one module per family (``small``, ``torchvision_models``,
``efficientnet``), infrastructure in the modules with a leading underscore.

A conf/model file names a family's factory as ``_target_: transferlab.models.<factory>``; Hydra builds it
through ``build_backbone``. Importing this package does not import torch (the config checks ask the
registry before any heavy import); the torch objects below load on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from transferlab.models._registry import Family, InputNorm, family_of, model_args
from transferlab.models.efficientnet import efficientnet_lite
from transferlab.models.small import small_cnn, small_resnet, small_vgg
from transferlab.models.torchvision_models import TORCHVISION_ARCHS, imagenet_weights, torchvision_backbone

if TYPE_CHECKING:
    from transferlab.models._backbone import Backbone
    from transferlab.models._heads import Head, TransferNet

__all__ = [
    "Backbone",
    "Family",
    "Head",
    "InputNorm",
    "TORCHVISION_ARCHS",
    "TransferNet",
    "build_backbone",
    "efficientnet_lite",
    "family_of",
    "imagenet_weights",
    "small_cnn",
    "small_resnet",
    "small_vgg",
    "torchvision_backbone",
]

_LAZY = {"Backbone": "_backbone", "Head": "_heads", "TransferNet": "_heads"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_backbone(model_cfg: Mapping[str, Any], image_size: int) -> Backbone:
    """The configured backbone with random weights; a bad argument is a ValueError with the model's own message."""
    family = family_of(model_cfg)
    try:
        return family.backbone(model_args(model_cfg), image_size)
    except TypeError as err:  # an argument the factory does not take
        raise ValueError(f"model {model_cfg.get('name', family.factory)}: {err}") from None
