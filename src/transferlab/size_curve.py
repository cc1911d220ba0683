"""Stage `size_curve`: every regime on nested subsets of a target's training split (10, 30, 100, 300
and all images per class by default), every seed, at the headline budget: whether labelling more
images would change the answer, and where one regime overtakes another.

Off unless `size_curve.run` is true (it trains about as much as the comparison's trainable regimes);
off, it writes only that it is off, without importing torch. Output: models/size_curve/results.json.
The work is in transferlab.training.size_curve.
"""

from __future__ import annotations

from transferlab.core.artifacts import SizeCurveResults
from transferlab.core.config import load_config, save_config
from transferlab.core.files import staged_dir
from transferlab.core.names import same_target
from transferlab.core.paths import CONFIG, RESULTS, ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, launched_as_global_zero, run_stage
from transferlab.tracking.store import check_store


def main(argv: list[str]) -> None:
    cfg = load_config("size_curve", argv)
    where = ProjectPaths.of(cfg)
    if not cfg.size_curve.run:
        with prepared("size_curve", {}, [where.size_curve]), staged_dir(where.size_curve) as staging:
            SizeCurveResults(run=False).save(staging / RESULTS)
            save_config(cfg, staging / CONFIG)
        print("size_curve is off (size_curve.run: false): turn it on with `dvc exp run -S size_curve.run=true`")
        return
    targets = sorted({q for quadrant in cfg.size_curve.quadrants for q in same_target(quadrant)})
    inputs = {where.regime_results(r): f"finetune@{r}" for r in cfg.regimes}
    inputs.update(where.dataset_inputs(targets))
    if any(cfg.regime[r].init == "pretrained" for r in cfg.regimes):
        inputs.update(where.pretrain_inputs())
    with prepared("size_curve", inputs, [where.size_curve], check_store):
        with heavy_imports():
            from transferlab.tracking.runs import open_pipeline
            from transferlab.training.size_curve import run_size_curve
        parent = open_pipeline(cfg).run_id if launched_as_global_zero() else None
        run_size_curve(cfg, where.state("size_curve"), parent)


if __name__ == "__main__":
    run_stage("size_curve", main)
