"""``pretrain.source: file``: your own pretrained weights for the configured backbone, read from a file.

Accepted, with the keys matched strictly (a one-line error names the missing and unexpected ones):
- a state dict of the backbone as this pipeline saves it (another run's models/pretrain/backbone.pt);
- for a family with a ``whole_model`` (torchvision's, EfficientNet-Lite), a torchvision- or timm-style state
  dict of the whole classification model
  (its classifier's keys are expected, and dropped with the classifier);
- a Lightning checkpoint (a ``state_dict`` inside) of a module that holds either, under any
  attribute prefix (``net.backbone.``, ``model.``, ...): the prefix that matches most keys is used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferlab.core.errors import ConfigError
from transferlab.models._backbone import Backbone

SHOWN = 3


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict or of a Lightning checkpoint's ``state_dict``; anything else is one line.
    ``weights_only``: a checkpoint is data, never code to run."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"pretrain.weights={path}: not a torch state dict or checkpoint ({reason})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise ConfigError(f"pretrain.weights={path}: holds {type(loaded).__name__}, not a state dict of tensors")
    tensors = {k: v for k, v in loaded.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if len(tensors) != len(loaded):
        odd = next(k for k, v in loaded.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor)))
        raise ConfigError(f"pretrain.weights={path}: entry {odd!r} is not a tensor (a state dict holds only tensors)")
    return tensors


def best_prefix(loaded: dict[str, torch.Tensor], expected: set[str]) -> tuple[str, int]:
    """The attribute prefix (``""``, ``"net.backbone."``, ...) under which most ``expected`` keys are found."""
    counts: dict[str, int] = {}
    for key in loaded:
        cut = -1
        while True:
            prefix = key[: cut + 1]
            if key[cut + 1 :] in expected:
                counts[prefix] = counts.get(prefix, 0) + 1
            cut = key.find(".", cut + 1)
            if cut < 0:
                break
    if not counts:
        return "", 0
    prefix = max(counts, key=lambda p: (counts[p], -len(p)))
    return prefix, counts[prefix]


def _listed(keys: set[str]) -> str:
    shown = ", ".join(sorted(keys)[:SHOWN])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > SHOWN else "")


def load_strict(module: nn.Module, loaded: dict[str, torch.Tensor], path: Path, what: str) -> None:
    expected = set(module.state_dict())
    prefix, _ = best_prefix(loaded, expected)
    found = {k[len(prefix) :]: v for k, v in loaded.items() if k.startswith(prefix)}
    missing, unexpected = expected - set(found), set(found) - expected
    under = f" (under the prefix {prefix!r})" if prefix else ""
    if missing or unexpected:
        parts = [f"{len(missing)} missing keys ({_listed(missing)})" if missing else ""]
        parts.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})" if unexpected else "")
        raise ConfigError(f"pretrain.weights={path} does not fit {what}{under}: {' and '.join(p for p in parts if p)}")
    own = module.state_dict()
    wrong = {k for k, v in found.items() if v.shape != own[k].shape}
    if wrong:
        first = sorted(wrong)[0]
        raise ConfigError(
            f"pretrain.weights={path} does not fit {what}: {len(wrong)} tensors of another shape, e.g. {first} "
            f"{tuple(found[first].shape)} where the model has {tuple(own[first].shape)}"
        )
    module.load_state_dict(found, strict=True)


def backbone_from_file(model_cfg: dict[str, Any], image_size: int, path: Path) -> Backbone:
    """The configured backbone with the weights of ``path`` (see the module docstring for the formats)."""
    from transferlab.models import build_backbone
    from transferlab.models._registry import family_of, model_args

    loaded = read_state_dict(path)
    family = family_of(model_cfg)
    name = model_cfg.get("name", family.factory)
    # (what the file may hold, the module to load it into, the backbone that gives afterwards)
    fits: list[tuple[str, nn.Module, Callable[[], Backbone]]] = []
    if family.whole_model is not None:
        whole, to_backbone = family.whole_model(model_args(model_cfg))
        fits.append((f"the whole {name} classifier (torchvision/timm keys)", whole, to_backbone))
    backbone = build_backbone(model_cfg, image_size)
    fits.append((f"the {name} backbone (this pipeline's backbone.pt keys)", backbone, lambda: backbone))
    scored = [(best_prefix(loaded, set(module.state_dict()))[1], i) for i, (_, module, _) in enumerate(fits)]
    score, best = max(scored, key=lambda s: (s[0], -s[1]))
    what, module, result = fits[best]
    if score == 0:
        raise ConfigError(
            f"pretrain.weights={path}: no key fits model={name} "
            f"(the file's first keys: {', '.join(list(loaded)[:SHOWN])})"
        )
    load_strict(module, loaded, path, what)
    return result()
