"""The regime × quadrant matrix: each cell's configuration and budget, and the report's verdicts.

The matrix end to end under DVC (the switch, the cells, the figures) is in test_pipeline_e2e.py.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from transferlab.config import ConfigError, load_config
from transferlab.regime_matrix import epochs_for
from transferlab.report import RECOMMENDED, _stats, matrix_verdicts


def test_a_cell_runs_the_named_regime_with_the_matrix_budget_not_the_quadrant_entry(repo):
    params = OmegaConf.load(repo / "params.yaml")
    # small_different's pipeline entry is truncate_freeze with a cut_at; freeze_all must not inherit it.
    cfg = load_config("regime_matrix", ["quadrant=small_different", "regime=freeze_all", "seed=2"], root=repo)
    assert (cfg.regime.name, cfg.regime.cut_at, cfg.seed) == ("freeze_all", None, 2)
    assert cfg.train.lr == params.matrix.lr.freeze_all
    cfg = load_config("regime_matrix", ["quadrant=large_similar", "regime=truncate_freeze"], root=repo)
    assert cfg.regime.cut_at == params.matrix.cut_at and cfg.regime.freeze_backbone is True
    cfg = load_config("regime_matrix", ["quadrant=large_similar", "regime=scratch"], root=repo)
    assert cfg.regime.init == "random" and cfg.train.lr == params.matrix.lr.scratch


@pytest.mark.parametrize("argv,message", [
    (["quadrant=small_similar"], "matrix stages need regime=<name> (allowed: finetune_all, freeze_all, scratch, "
                                 "truncate_freeze)"),
    (["quadrant=small_similar", "regime=linear_probe"], "unknown regime 'linear_probe' (allowed: finetune_all"),
    (["regime=scratch"], "stage regime_matrix needs quadrant=<name>"),
])
def test_bad_cell_arguments_are_one_line_errors(repo, argv, message):
    with pytest.raises(ConfigError) as err:
        load_config("regime_matrix", argv, root=repo)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("steps,n_train,batch,epochs", [
    (320, 150, 64, 107),  # 3 steps per epoch (the last batch partial)
    (320, 2500, 64, 8),   # 40 steps per epoch
    (5, 30, 16, 3),
    (1, 10_000, 64, 1),
])
def test_every_cell_gets_at_least_the_same_number_of_steps(steps, n_train, batch, epochs):
    assert epochs_for(steps, n_train, batch) == epochs
    per_epoch = -(-n_train // batch)
    assert epochs * per_epoch >= steps > (epochs - 1) * per_epoch


def matrix_of(accs: dict[str, dict[str, list[float]]]) -> dict:
    return {q: {r: _stats(values) for r, values in by.items()} for q, by in accs.items()}


def test_verdict_names_the_winner_its_margin_and_the_recommended_regime():
    assert RECOMMENDED["large_similar"] == "finetune_all"
    matrix = matrix_of({"large_similar": {"freeze_all": [0.60, 0.62, 0.61], "finetune_all": [0.70, 0.72, 0.71],
                                          "scratch": [0.80, 0.81, 0.79]}})
    [verdict] = matrix_verdicts(matrix)
    assert verdict == ("**large_similar**: `scratch` won with test acc 0.800 ± 0.010, 0.090 ahead of `finetune_all` "
                       "(0.710 ± 0.010); it beat it on 3 of 3 seeds. The course note recommends `finetune_all`: "
                       "0.710 ± 0.010, 0.090 behind (rank 2 of 3).")


def test_verdict_says_when_the_recommended_regime_won_and_when_the_gap_is_noise():
    matrix = matrix_of({"small_similar": {"freeze_all": [0.70, 0.60, 0.80], "scratch": [0.72, 0.58, 0.66]}})
    [verdict] = matrix_verdicts(matrix)
    assert verdict.startswith("**small_similar**: `freeze_all` won with test acc 0.700 ± 0.100, 0.047 ahead of "
                              "`scratch` (0.653 ± 0.070); it beat it on 2 of 3 seeds")
    assert "within one standard deviation: not a clear win" in verdict
    assert verdict.endswith("That is the regime the course note recommends.")
