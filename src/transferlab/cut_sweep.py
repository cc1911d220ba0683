"""Stage `cut_sweep`: truncate_freeze at every cut point of `cut_sweep.cut_at`, every seed, on the
quadrants of `cut_sweep.quadrants` (a similar and a different target by default).

Keeping the pretrained stages up to and including `cut_at`, frozen, with a new head trained
on them: how far up the pretrained features stay useful for each target (the
layer-transferability curve of Yosinski et al., 2014). Output: models/cut_sweep/results.json.
The work is in transferlab.training.comparison.
"""

from __future__ import annotations

from transferlab.core.config import load_config
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, launched_as_global_zero, run_stage
from transferlab.tracking.store import check_store


def main(argv: list[str]) -> None:
    cfg = load_config("cut_sweep", argv)
    where = ProjectPaths.of(cfg)
    inputs = {**where.pretrain_inputs(), **where.dataset_inputs(list(cfg.cut_sweep.quadrants))}
    with prepared("cut_sweep", inputs, [where.cut_sweep], check_store):
        with heavy_imports():
            from transferlab.tracking.runs import open_pipeline
            from transferlab.training.comparison import run_cut_sweep
        parent = open_pipeline(cfg).run_id if launched_as_global_zero() else None
        run_cut_sweep(cfg, where.state("cut_sweep"), parent)


if __name__ == "__main__":
    run_stage("cut_sweep", main)
