"""The model registry: every family of backbones, declared once, in its own module of ``transferlab.models``.

A family module (any module of this package whose name has no leading underscore) calls ``register``
at import with what the rest of the pipeline needs to know about its networks:

- ``factory``: the function a conf/model file names as ``_target_: transferlab.models.<factory>``;
- ``args``: the dataclass of that file's other keys (the schema: unknown keys and wrong types are errors);
- ``stage_names``: the names of the stages ``cut_at`` picks from, read off the built network (or, where
  the factory itself names its stages from its arguments, the same function it uses);
- ``input_norm``: the per-channel mean/std (of pixel values in [0, 1]) its weights expect;
- ``sources``: the ``pretrain.source`` values it supports, and ``imagenet``, the loader of its ImageNet
  weights (a package installed with the project, or torchvision's cache);
- ``whole_model``: the classification model (with classifier) whose state-dict keys a weights file may
  use (``pretrain.source: file``).

No torch here, and none in a family module at import time: the schema asks this registry while
checking a config, before any heavy import (a family's functions import torch when they are called).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

PACKAGE = "transferlab.models"
SOURCES = ("pipeline", "imagenet", "file")  # pretrain.source


@dataclass(frozen=True)
class InputNorm:
    """What a network expects of its input: (pixel / 255 - mean) / std per RGB channel.

    The pipeline's tensors are pixel / 127.5 - 1, i.e. mean 0.5 and std 0.5 (``PIPELINE``); a backbone
    whose weights expect another normalisation converts them in its first operation (``Backbone``)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def from_pipeline(self) -> tuple[list[float], list[float]]:
        """(scale, shift) per channel so that pipeline_tensor * scale + shift is this normalisation:
        pixel / 255 = (t + 1) / 2, so (pixel / 255 - mean) / std = t / (2 std) + (0.5 - mean) / std."""
        return [1 / (2 * s) for s in self.std], [(0.5 - m) / s for m, s in zip(self.mean, self.std)]

    @property
    def is_pipeline(self) -> bool:
        return self == PIPELINE

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


PIPELINE = InputNorm((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# torchvision's ImageNet weights (their transforms' mean/std).
IMAGENET = InputNorm((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class Pretrained:
    """A backbone with ImageNet weights and where they came from (PretrainMeta's weights_* fields)."""

    backbone: Any
    provenance: dict[str, str]


@dataclass(frozen=True)
class Family:
    factory: str
    args: type
    build: Callable[..., Any]  # (**args[, image_size]) -> Backbone with random weights
    input_norm: Callable[[Mapping[str, Any]], InputNorm]
    sources: tuple[str, ...] = ("pipeline", "file")
    imagenet: Callable[[Mapping[str, Any]], Pretrained] | None = None
    imagenet_note: str = ""  # where its ImageNet weights come from, for messages and the report
    whole_model: Callable[[Mapping[str, Any]], tuple[Any, Callable[[], Any]]] | None = None
    names_stages: Callable[[Mapping[str, Any]], list[str]] | None = None  # without building, when known
    takes_image_size: bool = False
    doc: str = ""

    @property
    def target(self) -> str:
        return f"{PACKAGE}.{self.factory}"

    def backbone(self, args: Mapping[str, Any], image_size: int) -> Any:
        """A backbone of this family with random weights."""
        kwargs = dict(args)
        if self.takes_image_size:
            kwargs["image_size"] = image_size
        return self.build(**kwargs)

    def stage_names(self, args: Mapping[str, Any]) -> list[str]:
        """The stage names ``cut_at`` picks from: from the family's own naming function where the
        factory names its stages from its arguments, else read off a built network (imports torch)."""
        if self.names_stages is not None:
            return list(self.names_stages(args))
        return list(_built_stage_names(self.factory, _frozen(args)))


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.factory in _FAMILIES and _FAMILIES[family.factory] is not family:
        raise RuntimeError(f"model family {family.factory!r} is registered twice")
    unknown = set(family.sources) - set(SOURCES)
    if unknown or ("imagenet" in family.sources) != (family.imagenet is not None):
        raise RuntimeError(f"model family {family.factory!r}: sources {family.sources} do not match its loaders")
    _FAMILIES[family.factory] = family
    return family


@lru_cache(maxsize=1)
def _discover() -> None:
    """Import every family module of the package (their ``register`` calls fill the registry)."""
    package = importlib.import_module(PACKAGE)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{PACKAGE}.{info.name}")


def families() -> dict[str, Family]:
    _discover()
    return dict(_FAMILIES)


def targets() -> list[str]:
    return [f.target for f in families().values()]


def family_of(model_cfg: Mapping[str, Any]) -> Family:
    """The family a conf/model file's ``_target_`` names; any other target is a ValueError naming the allowed."""
    target = str(model_cfg.get("_target_", ""))
    found = next((f for f in families().values() if f.target == target), None)
    if found is None:
        raise ValueError(f"_target_={target!r} is not allowed (allowed: {', '.join(targets())})")
    return found


def model_args(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A conf/model file's factory arguments: every key but ``_target_`` and ``name``."""
    return {str(k): v for k, v in model_cfg.items() if k not in ("_target_", "name")}


def _frozen(args: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in args.items()))


@lru_cache(maxsize=32)
def _built_stage_names(factory: str, frozen_args: tuple) -> tuple[str, ...]:
    family = families()[factory]
    args = {k: list(v) if isinstance(v, tuple) else v for k, v in frozen_args}
    return tuple(family.backbone(args, image_size=64).stage_names)
