"""Stage `pretrain`: train the CNN on the source dataset (or take ImageNet weights, or your own from a
file), models/pretrain/.

The work is in transferlab.training.pretraining; this module checks the input first.
"""

from __future__ import annotations

import os
from pathlib import Path

from transferlab.core.config import load_config, project_root
from transferlab.core.errors import ConfigError
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, launched_as_global_zero, run_stage
from transferlab.tracking.store import check_store


def weights_file(cfg) -> Path:
    """`pretrain.source: file`: the weights file, which must exist and have the sha256 the params name."""
    from transferlab.core.files import sha256_of

    path = Path(cfg.pretrain.weights).expanduser()
    if not path.is_absolute():
        path = Path(os.environ.get("DVC_ROOT", project_root())) / path
    if not path.is_file():
        raise ConfigError(f"pretrain.weights={cfg.pretrain.weights}: no such file ({path})")
    actual = sha256_of(path)
    if actual != cfg.pretrain.weights_sha256.lower():
        raise ConfigError(
            f"pretrain.weights={cfg.pretrain.weights} has sha256 {actual}, pretrain.weights_sha256 says "
            f"{cfg.pretrain.weights_sha256} (another file, or set pretrain.weights_sha256={actual})"
        )
    return path


def main(argv: list[str]) -> None:
    cfg = load_config("pretrain", argv)
    where = ProjectPaths.of(cfg)
    source = cfg.pretrain.source
    weights = weights_file(cfg) if source == "file" else None
    inputs = where.dataset_inputs(["source"]) if source == "pipeline" else {}
    with prepared("pretrain", inputs, [where.pretrain], check_store if source != "imagenet" else None):
        with heavy_imports():
            from transferlab.tracking.runs import open_pipeline
            from transferlab.training.pretraining import file_backbone, imagenet_backbone, run_pretrain
        if source == "imagenet":
            imagenet_backbone(cfg)
            return
        parent = open_pipeline(cfg).run_id if launched_as_global_zero() else None
        if weights is not None:
            file_backbone(cfg, weights, parent)
            return
        run_pretrain(cfg, where.state("pretrain"), parent)


if __name__ == "__main__":
    run_stage("pretrain", main)
