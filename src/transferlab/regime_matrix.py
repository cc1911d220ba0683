"""Stage `regime_matrix@<quadrant>-<regime>-<seed>`: one cell of the regime × quadrant matrix.

Fine-tunes one quadrant under any regime (not only the one params.yaml assigns to it) and
evaluates it on the test split, in one process. Every cell gets the same budget: the same
number of optimizer steps (`matrix.steps`, so a small dataset gets more epochs than a large
one) with its regime's learning rate (`matrix.lr.<regime>`), and the checkpoint with the
best val/acc is the one tested. The cell's result is reports/matrix/cells/<cell>.json; the
`report` stage turns the cells into the heatmap. Checkpoints are not kept (48+ of them);
the MLflow run (tags stage, quadrant, regime, seed) holds the metrics and the config.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig

from transferlab import tracking
from transferlab.cli import run_stage
from transferlab.config import ConfigError, load_config, paths, save_config
from transferlab.data import load_split, write_json
from transferlab.evaluate import evaluate
from transferlab.finetune import prepare
from transferlab.training import fit, loaders
from transferlab.training_data import training_sets

CELLS = "matrix/cells"  # under reports/


def cell_name(quadrant: str, regime: str, seed: int) -> str:
    return f"{quadrant}-{regime}-s{seed}"


def epochs_for(steps: int, n_train: int, batch_size: int) -> int:
    """Epochs that give at least ``steps`` optimizer steps (the last batch of an epoch may be partial)."""
    return max(1, math.ceil(steps / math.ceil(n_train / batch_size)))


def run_cell(cfg: DictConfig, out_file: Path, stage: str) -> dict:
    """Train cfg.quadrant under cfg.regime for the matrix budget, test the best checkpoint, write ``out_file``."""
    steps = cfg.matrix.steps
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"matrix.steps={steps!r} is not allowed (must be an integer >= 1)")
    if cfg.seed is None:
        raise ConfigError("seed=null is not allowed in the matrix (each cell is one seed: an integer >= 0)")
    quadrant, regime = cfg.quadrant, cfg.regime.name
    train_set, val_set = training_sets(cfg, quadrant, cfg.train.train_per_class)
    cfg.train.epochs = epochs_for(steps, len(train_set), cfg.train.batch_size)
    module, train_set, val_set = prepare(cfg, quadrant, train_set, val_set)
    train_loader, val_loader = loaders(train_set, val_set, cfg.train.batch_size, cfg.seed)
    cut_at = cfg.regime.cut_at
    tags = {"stage": stage, "quadrant": quadrant, "regime": regime, "seed": str(cfg.seed),
            **({"cut_at": cut_at} if cut_at else {})}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="transferlab-cell-") as scratch:
        save_config(cfg, Path(scratch) / "config.yaml")
        best, run_id = fit(cfg, module, train_loader, val_loader, Path(scratch),
                           run_name=f"{stage}/{out_file.stem}", tags=tags, log_checkpoint=False)
    seconds = time.perf_counter() - started
    if run_id is None:  # a DDP rank other than 0: rank 0 tests and writes
        return {}
    images, labels = load_split(paths(cfg)["raw"] / quadrant, "test")
    test, _ = evaluate(best, images, labels, cfg.evaluate.batch_size)
    tracking.log_metrics(run_id, {f"test/{name}": value for name, value in test.items()})
    result = {"quadrant": quadrant, "regime": regime, "seed": cfg.seed, "cut_at": cut_at,
              "n_train": len(train_set), "epochs": cfg.train.epochs, "steps": steps, "lr": cfg.train.lr,
              "train_seconds": round(seconds, 1), "test": test, "run_id": run_id}
    write_json(out_file, result)
    print(f"{out_file.stem}: test acc {test['acc']:.4f} after {cfg.train.epochs} epochs ({seconds:.0f}s)")
    return result


def main(argv: list[str]) -> None:
    cfg = load_config("regime_matrix", argv)
    out_file = paths(cfg)["reports"] / CELLS / f"{cell_name(cfg.quadrant, cfg.regime.name, cfg.seed)}.json"
    run_cell(cfg, out_file, "regime_matrix")


if __name__ == "__main__":
    run_stage("regime_matrix", main)
