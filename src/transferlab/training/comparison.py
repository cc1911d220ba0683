"""The comparison's work: every seed of one regime on every quadrant, and truncate_freeze's cut sweep.

``run_regime`` is the body of the ``finetune@<regime>`` stage: for each quadrant it trains the
regime once per seed (``seeds``) with the same budget as every other regime
(``training.budget``), tests each run on the quadrant's test split (reported, never used to
choose), and keeps the network of the seed with the best validation accuracy: the one the
registry gets if this regime wins the quadrant. ``run_cut_sweep`` trains truncate_freeze's
head at every cut point in ``cut_sweep.cut_at`` for the quadrants in ``cut_sweep.quadrants``.
Every cell goes through ``training.runner``.

Frozen regimes train their head on features cached once per quadrant (the pretrained backbone's
output does not depend on the seed); the cut sweep caches every cut's features from one forward pass.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.artifacts import CellRecord, CutSeeds, CutSweepResults, QuadrantSeeds, RegimeResults
from transferlab.core.config import save_config
from transferlab.core.files import csv_text, staged_dir, write_text
from transferlab.core.names import QUADRANTS
from transferlab.core.paths import CONFIG, HISTORY, MODEL, RESULTS, ProjectPaths
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training import parallel
from transferlab.training.module import Classifier, save_model
from transferlab.training.runner import CellOutcome, CellRunner, CellSpec, history_rows

HISTORY_COLUMNS = ["seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]


def history_csv(rows: list[dict]) -> str:
    """history.csv: one row per (seed, epoch); floats to 6 significant digits, a missing value empty."""

    def shown(value) -> str:
        return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)

    return csv_text(HISTORY_COLUMNS, [[shown(row.get(c)) for c in HISTORY_COLUMNS] for row in rows])


def chosen_seed(records: dict[int, CellRecord]) -> int:
    """The seed whose network is kept: best validation accuracy, the lowest seed on a tie."""
    return max(sorted(records), key=lambda seed: records[seed].val_acc)


def regime_specs(cfg: DictConfig, regime: str) -> dict[tuple[str, int], CellSpec]:
    """The stage's cells: every quadrant, every seed."""
    return {(q, seed): CellSpec.for_regime(cfg, regime, q, seed) for q in QUADRANTS for seed in cfg.seeds}


def run_regime(cfg: DictConfig, regime_name: str, state_root: Path, parent: str | None) -> None:
    """The ``finetune@<regime>`` stage's work; writes models/finetune/<regime>/ when every cell is done."""
    runner = CellRunner(cfg, state_root, parent)
    specs = regime_specs(cfg, regime_name)
    side_by_side = cfg.trainer.cell_processes
    if side_by_side > 1 and not cfg.regime[regime_name].cache_features:  # a head on cached features takes seconds
        pending = [spec for spec in specs.values() if not runner.is_finished(spec)]
        parallel.train_cells(runner, pending, side_by_side)
    quadrants: dict[str, QuadrantSeeds] = {}
    networks: dict[str, Classifier] = {}
    histories: dict[str, list[dict]] = {}
    for quadrant in QUADRANTS:
        outcomes: dict[int, CellOutcome] = {seed: runner.run(specs[quadrant, seed]) for seed in cfg.seeds}
        records = {seed: outcome.record for seed, outcome in outcomes.items()}
        keep = chosen_seed(records)
        networks[quadrant] = outcomes[keep].module
        histories[quadrant] = history_rows(outcomes)
        quadrants[quadrant] = QuadrantSeeds(chosen_seed=keep, seeds={str(s): r for s, r in records.items()})
    if not runs.launched_as_global_zero():
        return
    where = ProjectPaths.of(cfg)
    with staged_dir(where.finetune(regime_name)) as staging:
        for quadrant, network in networks.items():
            (staging / quadrant).mkdir()
            save_model(network, staging / quadrant / MODEL)
            write_text(staging / quadrant / HISTORY, history_csv(histories[quadrant]))
        RegimeResults(regime=regime_name, quadrants=quadrants).save(staging / RESULTS)
        save_config(cfg, staging / CONFIG)
    fitting.clear(state_root)


def run_cut_sweep(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    """truncate_freeze's head at every cut of ``cut_sweep.cut_at``, every seed, on each quadrant of
    ``cut_sweep.quadrants``: the layer-transferability curve (Yosinski et al., 2014). Every cut's
    features (train, val and test) come from one forward pass of the pretrained backbone."""
    runner = CellRunner(cfg, state_root, parent)
    cuts = list(cfg.cut_sweep.cut_at)
    found: dict[str, dict[str, CutSeeds]] = {}
    for quadrant in cfg.cut_sweep.quadrants:
        runner.cache_features(quadrant, cuts, cfg.finetune.train_per_class)
        found[quadrant] = {}
        for cut in cuts:
            seeds = {}
            for seed in cfg.seeds:
                record = runner.run(
                    CellSpec.for_regime(cfg, "truncate_freeze", quadrant, seed, stage="cut_sweep", cut_at=cut)
                ).record
                seeds[str(seed)] = record.model_copy(update={"steps": None, "n_train": None})
            found[quadrant][cut] = CutSeeds(seeds=seeds)
    if not runs.launched_as_global_zero():
        return
    where = ProjectPaths.of(cfg)
    with staged_dir(where.cut_sweep) as staging:
        CutSweepResults(cut_at=cuts, quadrants=found).save(staging / RESULTS)
        save_config(cfg, staging / CONFIG)
    fitting.clear(state_root)
