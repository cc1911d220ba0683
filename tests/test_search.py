"""The search: successive halving over each regime's grid (Optuna), resumable, and what it does to a verdict."""

from __future__ import annotations

import math

import numpy as np

from transferlab.analysis.verdict import comparison
from transferlab.core.artifacts import CellRecord, QuadrantSeeds
from transferlab.training.search import Point, grid, rung_words, rungs, successive_halving

LRS = [0.001, 0.003, 0.01, 0.03]


def curve(lr: float, best_lr: float, epochs: int = 10, ceiling: float = 0.9) -> list[float]:
    """A validation curve that rises to a ceiling that falls off with log-distance from ``best_lr``."""
    top = ceiling - 0.2 * abs(math.log10(lr / best_lr))
    return [round(top * (1 - math.exp(-0.4 * e)), 6) for e in range(1, epochs + 1)]


def run_curves(best_lr: float, log: list):
    def run(point: Point, reporter) -> list[float]:
        values = []
        for epoch, value in enumerate(curve(point.lr, best_lr), start=1):
            values.append(value)
            if reporter.report(epoch, value):
                break
        log.append((point.label, len(values)))
        return values

    return run


def test_successive_halving_finds_the_best_rate_and_stops_the_rest_early():
    """Catches: a search that trains every point to the end (no halving), or that keeps a pruned trial."""
    log: list = []
    found = successive_halving(
        grid(LRS, None), run_curves(0.01, log), epochs=10, min_epochs=3, reduction_factor=3, seed=0
    )
    assert found.chosen.point.lr == 0.01 and not found.at_edge(LRS)
    assert sum(epochs for _, epochs in log) < 10 * len(LRS)
    assert all(t.pruned_at in (None, 3, 9) for t in found.trials)
    assert any(t.pruned_at is not None for t in found.trials)


def test_progress_lines_name_the_rung_a_trial_stopped_at():
    """Catches: rung epochs that differ from the pruner's (3 and 9 of 10 at factor 3), a pruned trial shown
    at the wrong rung, or rung words on a search that does not prune."""
    assert rungs(10, 3, 3) == [3, 9] and rungs(10, 1, 2) == [1, 2, 4, 8] and rungs(3, 3, 3) == []
    log: list = []
    found = successive_halving(
        grid(LRS, None), run_curves(0.01, log), epochs=10, min_epochs=3, reduction_factor=3, seed=0
    )
    rung_of = {3: 1, 9: 2}
    pruned = [(t, at) for t in found.trials if (at := t.pruned_at) is not None]
    assert pruned and all(
        rung_words(t, [3, 9]) == f", stopped at rung {rung_of[at]} of 2 (epoch {at})" for t, at in pruned
    )
    assert rung_words(found.chosen, [3, 9]) == ", through all 2 rungs"
    assert rung_words(found.trials[0], []) == ""


def test_a_resumed_search_makes_the_same_decisions_from_kept_trials():
    """Catches: a search that, after a kill, decides differently (it must replay the kept trials' epochs to
    the pruner) or trains its finished trials again."""
    log: list = []
    first = successive_halving(grid(LRS, None), run_curves(0.003, log), 10, 3, 3, seed=7)
    kept = {t.point: t.values for t in first.trials}
    retrained: list = []

    def read_back(point, reporter):
        retrained.append(point)
        return kept[point]  # what the runner returns for a finished cell: its epochs, reported to nobody yet

    again = successive_halving(grid(LRS, None), read_back, 10, 3, 3, seed=7)
    assert [(t.point, t.pruned_at) for t in again.trials] == [(t.point, t.pruned_at) for t in first.trials]
    assert again.chosen.point == first.chosen.point


def test_frozen_regimes_run_the_whole_grid_and_variants_multiply_it():
    """Catches: pruning where a trial is cheap (cached features), and a recipe variant left out of the grid."""
    log: list = []
    points = grid(LRS, {"discriminative": {}, "two_phase": {"head_epochs": 5}})
    assert len(points) == 8 and {p.variant for p in points} == {"discriminative", "two_phase"}
    found = successive_halving(points, run_curves(0.03, log), 10, 3, 3, seed=0, prune=False)
    assert sorted(epochs for _, epochs in log) == [10] * 8 and found.chosen.point.lr == 0.03
    assert found.at_edge(LRS)


def as_seeds(accuracy: float, offset: int) -> QuadrantSeeds:
    records = {}
    for seed in (0, 1, 2):
        rng = np.random.default_rng(offset * 10 + seed)
        right = (rng.random(400) < accuracy).astype(int)
        records[str(seed)] = CellRecord.model_validate(
            {
                "seed": seed,
                "val_acc": right.mean(),
                "best_epoch": 10,
                "epochs": 10,
                "val_correct": "".join(map(str, right)),
                "test": {"acc": 0.5, "macro_f1": 0.5, "loss": 1.0, "ece": 0.1},
            }
        )
    return QuadrantSeeds(chosen_seed=0, seeds=records)


def test_the_default_rate_makes_a_regime_lose_and_the_tuned_rate_makes_it_win():
    """Catches: a comparison decided by a hand-set learning rate. finetune_all's best rate is 0.01; at the
    default 0.001 it loses to freeze_all (insensitive to its rate here), tuned it wins clearly."""
    log: list = []
    tuned = successive_halving(grid(LRS, None), run_curves(0.01, log), 10, 3, 3, seed=0).chosen.point.lr
    at = {"default": 0.001, "tuned": tuned}
    verdicts = {}
    for name, lr in at.items():
        finetune_all = as_seeds(max(curve(lr, 0.01)), 1)
        freeze_all = as_seeds(0.75, 2)
        results = {
            "finetune_all": {"150": {"large_similar": finetune_all}},
            "freeze_all": {"150": {"large_similar": freeze_all}},
        }
        verdicts[name] = comparison(results, {}, ["large_similar"], [150], 0.95, 0.95)["large_similar"].verdict
    assert tuned == 0.01
    assert verdicts["default"].recommended == "freeze_all" and verdicts["default"].call == "clear"
    assert verdicts["tuned"].recommended == "finetune_all" and verdicts["tuned"].call == "clear"
