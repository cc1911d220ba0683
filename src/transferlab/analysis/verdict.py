"""The comparison's verdict: per quadrant, which regime wins, chosen on validation data only.

Pure functions over the results the ``finetune@<regime>`` stages write (no torch, no MLflow):

- every regime's validation and test metrics as mean ± std over seeds;
- the winner: the best *mean validation accuracy* over seeds (a tie goes to the regime listed
  first in docs/regimes.md's order). Test metrics are reported for every regime and never
  consulted here;
- the margin over the runner-up (validation, the criterion), on how many seeds the winner
  beat it (paired by seed), whether that margin is within one standard deviation, and
  where the course note's regime ranks.
"""

from __future__ import annotations

import math

from transferlab.core.artifacts import (
    Comparison,
    QuadrantComparison,
    QuadrantSeeds,
    RegimeResults,
    RegimeSummary,
    Stats,
    Verdict,
)
from transferlab.core.names import COURSE_NOTE, REGIMES

TEST_METRICS = ("acc", "macro_f1", "loss", "ece")


def stats(values: list[float]) -> Stats:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return Stats(mean=round(mean, 6), std=round(std, 6), n=n)


def regime_summary(quadrant_results: QuadrantSeeds) -> RegimeSummary:
    """One regime on one quadrant (its entry in results.json): stats of val acc and each test metric."""
    seeds = sorted(quadrant_results.seeds, key=int)
    records = [quadrant_results.seeds[s] for s in seeds]
    return RegimeSummary(
        seeds=[int(s) for s in seeds],
        val_acc=[r.val_acc for r in records],
        val=stats([r.val_acc for r in records]),
        test={m: stats([getattr(r.test, m) for r in records]) for m in TEST_METRICS},
        test_acc=[r.test.acc for r in records],
        chosen_seed=quadrant_results.chosen_seed,
    )


def rank(by_regime: dict[str, RegimeSummary]) -> list[str]:
    """Regimes ordered by mean validation accuracy, best first (ties: docs/regimes.md's order)."""
    order = {r: i for i, r in enumerate(REGIMES)}
    return sorted(by_regime, key=lambda r: (-by_regime[r].val.mean, order.get(r, len(order))))


def quadrant_verdict(quadrant: str, by_regime: dict[str, RegimeSummary]) -> Verdict:
    ranked = rank(by_regime)
    winner = by_regime[ranked[0]]
    note = COURSE_NOTE[quadrant]
    verdict = Verdict(
        winner=ranked[0],
        ranking=ranked,
        chosen_seed=winner.chosen_seed,
        winner_val=winner.val,
        winner_test=winner.test,
        course_note=note,
        runner_up=None,
        course_note_rank=ranked.index(note) + 1 if note in by_regime else None,
    )
    if len(ranked) > 1:
        second = by_regime[ranked[1]]
        margin = winner.val.mean - second.val.mean
        paired = dict(zip(second.seeds, second.val_acc))
        wins = sum(v > paired[s] for s, v in zip(winner.seeds, winner.val_acc) if s in paired)
        verdict = verdict.model_copy(
            update={
                "runner_up": ranked[1],
                "margin_val": round(margin, 6),
                "margin_test": round(winner.test["acc"].mean - second.test["acc"].mean, 6),
                "seeds_won": wins,
                "seeds_compared": sum(s in paired for s in winner.seeds),
                "within_one_std": margin <= max(winner.val.std, second.val.std),
            }
        )
    return verdict


def comparison(results: dict[str, RegimeResults], quadrants: list[str]) -> Comparison:
    """Every regime's summary and the verdict per quadrant, from {regime: results.json}."""
    out = {}
    for quadrant in quadrants:
        by_regime = {
            regime: regime_summary(results[regime].quadrants[quadrant]) for regime in REGIMES if regime in results
        }
        out[quadrant] = QuadrantComparison(regimes=by_regime, verdict=quadrant_verdict(quadrant, by_regime))
    return Comparison(quadrants=out)


def sentence(quadrant: str, entry: QuadrantComparison) -> str:
    """The verdict of one quadrant in words, from the numbers, whatever they say."""
    v, regimes = entry.verdict, entry.regimes
    test = v.winner_test["acc"]
    text = (
        f"**{quadrant}**: `{v.winner}` wins on validation ({v.winner_val.mean:.3f} ± "
        f"{v.winner_val.std:.3f}); its test accuracy is {test.mean:.3f} ± {test.std:.3f}"
    )
    if v.runner_up:
        second = regimes[v.runner_up]
        text += (
            f". Runner-up `{v.runner_up}` ({second.val.mean:.3f} validation, "
            f"{second.test['acc'].mean:.3f} test): a validation margin of {v.margin_val:.3f}, "
            f"won on {v.seeds_won} of {v.seeds_compared} seeds"
        )
        if v.within_one_std:
            text += ", within one standard deviation: not a clear win at this many seeds"
        if v.margin_test is not None and v.margin_test < 0:
            text += f" (on test the runner-up is ahead by {-v.margin_test:.3f})"
    note = v.course_note
    if note == v.winner:
        text += ". The course note prescribes the same regime."
    elif v.course_note_rank is not None:
        text += (
            f". The course note prescribes `{note}`: rank {v.course_note_rank} of {len(regimes)} "
            f"({regimes[note].val.mean:.3f} validation, {regimes[note].test['acc'].mean:.3f} test)."
        )
    else:
        text += f". The course note prescribes `{note}`, which was not run."
    return text
