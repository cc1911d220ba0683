"""Stage `finetune@<regime>`: one regime on every quadrant, once per seed (the comparison's cells).

The regime (conf/regime/<name>.yaml, with its params.yaml settings) decides, as in
docs/regimes.md: whether the backbone starts from the pretrained weights (`init`), where it
is cut (`cut_at`), whether the kept stages are frozen, and the backbone's learning rate
relative to the new head's. Every regime gets the same budget (`finetune.steps`).
Outputs in models/finetune/<regime>/: results.json (validation and test metrics of every
quadrant and seed), <quadrant>/model.pt (the best-validation seed's network),
<quadrant>/history.csv. The work is in transferlab.training.comparison.
"""

from __future__ import annotations

from transferlab.core.config import load_config
from transferlab.core.names import QUADRANTS
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, launched_as_global_zero, run_stage
from transferlab.tracking.store import check_store


def main(argv: list[str]) -> None:
    cfg = load_config("finetune", argv)
    regime = cfg.args.regime
    where = ProjectPaths.of(cfg)
    inputs = where.dataset_inputs(QUADRANTS)
    if cfg.regime[regime].init == "pretrained":
        inputs.update(where.pretrain_inputs())
    with prepared(f"finetune@{regime}", inputs, [where.finetune(regime)], check_store):
        with heavy_imports():
            from transferlab.tracking.runs import open_pipeline
            from transferlab.training.comparison import run_regime
        parent = open_pipeline(cfg).run_id if launched_as_global_zero() else None
        run_regime(cfg, regime, where.state(f"finetune@{regime}"), parent)


if __name__ == "__main__":
    run_stage("finetune", main)
