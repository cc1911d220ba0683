"""Stage `race`: more seeds for the regimes still tied, where the call is close (transferlab.training.race).

Reads every regime's models/finetune/<regime>/results.json; writes models/race/ (the seeds added, the
contenders at each look, and the networks of the headline budget's added seeds).
"""

from __future__ import annotations

from transferlab.core.config import load_config
from transferlab.core.names import QUADRANTS
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, launched_as_global_zero, run_stage
from transferlab.tracking.store import check_store


def main(argv: list[str]) -> None:
    cfg = load_config("race", argv)
    where = ProjectPaths.of(cfg)
    inputs = {where.regime_results(r): f"finetune@{r}" for r in cfg.regimes}
    inputs.update(where.dataset_inputs(QUADRANTS))
    if any(cfg.regime[r].init == "pretrained" for r in cfg.regimes):
        inputs.update(where.pretrain_inputs())
    with prepared("race", inputs, [where.race], check_store):
        with heavy_imports():
            from transferlab.tracking.runs import open_pipeline
            from transferlab.training.race import run_race
        parent = open_pipeline(cfg).run_id if launched_as_global_zero() else None
        run_race(cfg, where.state("race"), parent)


if __name__ == "__main__":
    run_stage("race", main)
