"""Shared by the benchmark scripts (run as `python benchmarks/<script>.py`): a YAML node as a plain dict."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def config_dict(node: Any) -> dict[str, Any]:
    """A mapping node of a loaded conf/ file as a plain dict (one line naming the node if it is not a mapping)."""
    if not isinstance(node, DictConfig):
        raise SystemExit(f"expected a mapping in the conf/ file, got {type(node).__name__}")
    return {str(k): v for k, v in OmegaConf.to_container(node, resolve=True).items()}  # type: ignore[union-attr]
