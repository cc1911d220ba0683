"""The verdict: winners chosen on validation (never test), margins, seeds won, the course note's rank."""

import pytest

from transferlab.analysis.verdict import comparison, quadrant_verdict, regime_summary, sentence
from transferlab.core.artifacts import QuadrantSeeds, RegimeResults


def record(seed: int, val: float, test: float) -> dict:
    return {
        "seed": seed,
        "val_acc": val,
        "best_epoch": 1,
        "epochs": 1,
        "test": {"acc": test, "macro_f1": test, "loss": 1.0, "ece": 0.1},
    }


def results_of(
    val: dict[str, list[float]], test: dict[str, list[float]], quadrant: str = "large_similar"
) -> dict[str, RegimeResults]:
    """{regime: results.json} for one quadrant from per-seed validation and test accuracies."""
    out = {}
    for regime in val:
        seeds = {str(s): record(s, v, t) for s, (v, t) in enumerate(zip(val[regime], test[regime]))}
        chosen = max(range(len(val[regime])), key=lambda s: val[regime][s])
        out[regime] = RegimeResults.model_validate(
            {"regime": regime, "quadrants": {quadrant: {"seeds": seeds, "chosen_seed": chosen}}}
        )
    return out


def test_the_winner_is_the_best_mean_validation_accuracy_even_when_test_says_otherwise():
    """Catches: a winner chosen by test accuracy (peeking), or by the best single seed."""
    val = {"freeze_all": [0.70, 0.71, 0.72], "finetune_all": [0.66, 0.67, 0.78]}  # finetune_all: best seed, lower mean
    test = {"freeze_all": [0.50, 0.51, 0.52], "finetune_all": [0.90, 0.91, 0.92]}  # and far better on test
    verdict = comparison(results_of(val, test), ["large_similar"])["large_similar"].verdict
    assert verdict.winner == "freeze_all"
    assert verdict.runner_up == "finetune_all"
    assert verdict.margin_val == pytest.approx(0.71 - (0.66 + 0.67 + 0.78) / 3, abs=1e-6)
    assert verdict.margin_test < 0  # reported, not used
    assert (verdict.seeds_won, verdict.seeds_compared) == (2, 3)
    assert verdict.course_note == "finetune_all" and verdict.course_note_rank == 2


def test_a_tie_on_validation_goes_to_the_regime_listed_first():
    """Catches: a tie broken by test accuracy (or by dict order, which is not stable across files)."""
    val = {"scratch": [0.6, 0.6], "freeze_all": [0.6, 0.6]}
    test = {"scratch": [0.9, 0.9], "freeze_all": [0.1, 0.1]}
    verdict = comparison(results_of(val, test), ["large_similar"])["large_similar"].verdict
    assert verdict.winner == "freeze_all"


def test_verdict_in_words_names_winner_margin_seeds_noise_and_the_course_note():
    """Catches: a sentence that hides a noisy win, or where the course note's regime ranked."""
    val = {"freeze_all": [0.70, 0.60, 0.80], "truncate_freeze": [0.72, 0.58, 0.66]}
    test = {"freeze_all": [0.7, 0.6, 0.8], "truncate_freeze": [0.7, 0.6, 0.7]}
    entry = comparison(results_of(val, test, "small_different"), ["small_different"])["small_different"]
    text = sentence("small_different", entry)
    assert text.startswith("**small_different**: `freeze_all` wins on validation (0.700 ± 0.100)")
    assert "won on 2 of 3 seeds, within one standard deviation: not a clear win" in text
    assert text.endswith("The course note prescribes `truncate_freeze`: rank 2 of 2 (0.653 validation, 0.667 test).")


def test_a_single_regime_wins_without_a_runner_up():
    """Catches: a crash (or an invented margin) when `regimes` holds one regime."""
    entry = comparison(
        results_of({"scratch": [0.5, 0.6]}, {"scratch": [0.5, 0.5]}, "large_different"), ["large_different"]
    )
    verdict = entry["large_different"].verdict
    assert verdict.winner == "scratch" and verdict.runner_up is None and verdict.course_note_rank == 1
    assert "prescribes the same regime" in sentence("large_different", entry["large_different"])


def test_stats_use_the_sample_standard_deviation():
    """Catches: population std (it understates the spread of 3 seeds)."""
    summary = regime_summary(
        QuadrantSeeds.model_validate({"seeds": {"0": record(0, 0.1, 0.1), "1": record(1, 0.3, 0.3)}, "chosen_seed": 1})
    )
    assert (summary.val.mean, summary.val.std, summary.val.n) == (0.2, pytest.approx(0.141421, abs=1e-6), 2)
    assert quadrant_verdict("small_similar", {"freeze_all": summary}).winner == "freeze_all"
