"""Augmentation pipelines: conf/augment/<name>.yaml as an ``albumentations.Compose``.

A pipeline file holds an ordered ``transforms`` list; each entry names an albumentations
class (``_target_``) and its arguments. Every argument is checked against the class's own
signature before anything is built (albumentations only warns about an unknown argument
and then ignores it, so a typo such as ``prob`` for ``p`` would silently do nothing).
Which pipeline a dataset gets is a property of the dataset (``augment`` in its
conf/dataset file, overridable per experiment entry): flips change the label of digits
and text, so those datasets use a pipeline without them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.core.config import check_option, read_yaml
from transferlab.core.errors import ConfigError

PIPELINE_FILE = "pipeline.yaml"  # the resolved transform list, beside each dataset's augmented arrays


def pipeline_config(root: Path, name: str) -> list[dict[str, Any]]:
    """The checked transform list of conf/augment/<name>.yaml."""
    check_option(root, "augment", name)
    where = f"conf/augment/{name}.yaml"
    loaded = read_yaml(root / "conf" / "augment" / f"{name}.yaml")
    unknown = sorted(set(loaded) - {"transforms"})
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in {where} (allowed: transforms)")
    transforms = OmegaConf.to_container(loaded.get("transforms", []), resolve=True)
    if not isinstance(transforms, list):
        raise ConfigError(f"{where}: transforms must be a list of {{_target_: albumentations.<Name>, ...}}")
    for index, entry in enumerate(transforms):
        check_transform(entry, f"{where} transforms[{index}]")
    return transforms


def check_transform(entry: Any, where: str) -> None:
    """One entry: an albumentations transform class with only arguments its constructor takes."""
    import albumentations

    target = entry.get("_target_") if isinstance(entry, dict) else None
    prefix = "albumentations."
    cls = (
        getattr(albumentations, target[len(prefix) :], None)
        if isinstance(target, str) and target.startswith(prefix)
        else None
    )
    if not (inspect.isclass(cls) and issubclass(cls, albumentations.BasicTransform)):
        raise ConfigError(
            f"{where}: _target_={target!r} is not an albumentations transform (e.g. albumentations.HorizontalFlip)"
        )
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    unknown = sorted(set(entry) - {"_target_", *accepted})
    if unknown:
        raise ConfigError(f"{where}: {target} has no argument {unknown[0]!r} (allowed: {', '.join(accepted)})")


def build_pipeline(transforms: list[dict[str, Any]], seed: int | None = None):
    """An albumentations Compose of the (checked) transforms, in order."""
    import warnings

    import albumentations
    from hydra.utils import instantiate

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # an argument albumentations would ignore is an error
            steps = [instantiate(t) for t in transforms]
    except Exception as err:
        cause = err.__cause__ or err
        raise ConfigError(f"cannot build augmentation pipeline: {str(cause).strip().splitlines()[0]}") from None
    return albumentations.Compose(steps, seed=seed)


def saved_pipeline(folder: Path) -> list[dict[str, Any]]:
    """The transform list the augment stage wrote beside a dataset's arrays."""
    loaded: DictConfig = read_yaml(folder / PIPELINE_FILE)
    transforms = OmegaConf.to_container(loaded.transforms, resolve=True)
    assert isinstance(transforms, list)  # the augment stage wrote the checked list
    return transforms
