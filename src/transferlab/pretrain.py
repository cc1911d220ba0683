"""Stage `pretrain`: train the CNN on the source dataset (or take ImageNet weights), models/pretrain/.

The work is in transferlab.training.pretraining; this module checks the input first.
"""

from __future__ import annotations

from transferlab.core.config import load_config
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, launched_as_global_zero, run_stage
from transferlab.tracking.store import check_store


def main(argv: list[str]) -> None:
    cfg = load_config("pretrain", argv)
    where = ProjectPaths.of(cfg)
    from_imagenet = cfg.pretrain.source == "imagenet"
    inputs = {} if from_imagenet else where.dataset_inputs(["source"])
    with prepared("pretrain", inputs, [where.pretrain], None if from_imagenet else check_store):
        with heavy_imports():
            from transferlab.tracking.runs import open_pipeline
            from transferlab.training.pretraining import imagenet_backbone, run_pretrain
        if from_imagenet:
            imagenet_backbone(cfg)
            return
        parent = open_pipeline(cfg).run_id if launched_as_global_zero() else None
        run_pretrain(cfg, where.state("pretrain"), parent)


if __name__ == "__main__":
    run_stage("pretrain", main)
