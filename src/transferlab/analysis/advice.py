"""The advisor's rule, and how its advice compares with the measured comparison.

The rule is stated a priori (nothing in it was fitted to the comparison's results, test or
validation); it reads three numbers the ``advise`` stage computes from one forward pass:

- LogME of the pretrained network's pooled features at every stage (``analysis.transferability``);
- LogME of the same architecture's features with random weights (what "no pretraining" gives);
- images per class of the target's training split.

1. If no stage's pretrained features score above the best random ones, pretraining brought nothing
   the labels can use: ``scratch``.
2. Else, with few images (at most ``small_per_class``, 100 by default: the course note's "small"), train
   only a head on frozen features, cut where they score best: ``freeze_all`` if that is the last
   stage, else ``truncate_freeze`` at that stage.
3. Else there are enough images to adapt every pretrained weight: ``finetune_all``.

The source-target distance (proxy A-distance per stage) is reported beside the advice, not used by
the rule: on the built-in data it does not separate the similar from the different targets well
enough to decide on (see the report).
"""

from __future__ import annotations

from typing import Any

from transferlab.core.artifacts import Advice, QuadrantComparison, Recommendation, Stats


def recommend(
    images_per_class: float,
    stages: list[str],
    logme: dict[str, float],
    logme_random: dict[str, float],
    small_per_class: int,
) -> Recommendation:
    best = max(stages, key=lambda s: logme[s])
    best_random = max(logme_random.values())
    if logme[best] <= best_random:
        return Recommendation(
            regime="scratch",
            cut_at=None,
            reason=f"the pretrained features explain the labels no better than random ones (LogME "
            f"{logme[best]:.3f} at {best} vs {best_random:.3f}): train from scratch",
        )
    if images_per_class <= small_per_class:
        if best == stages[-1]:
            return Recommendation(
                regime="freeze_all",
                cut_at=None,
                reason=f"few images ({images_per_class:.0f} per class <= {small_per_class}): train "
                f"only a head, on the last stage's features, which score best (LogME "
                f"{logme[best]:.3f})",
            )
        return Recommendation(
            regime="truncate_freeze",
            cut_at=best,
            reason=f"few images ({images_per_class:.0f} per class <= {small_per_class}): train only "
            f"a head, on the stages up to {best}, whose features score best (LogME "
            f"{logme[best]:.3f} vs {logme[stages[-1]]:.3f} for the whole network)",
        )
    return Recommendation(
        regime="finetune_all",
        cut_at=None,
        reason=f"enough images ({images_per_class:.0f} per class > {small_per_class}) to adapt every "
        f"pretrained weight, and the pretrained features transfer (LogME {logme[best]:.3f} at "
        f"{best} vs {best_random:.3f} random)",
    )


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (ties averaged), None for fewer than 3 points or a constant list."""
    from scipy.stats import spearmanr

    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def check(advice: Advice, entry: QuadrantComparison, sweep: dict[str, dict[str, Stats]] | None) -> dict[str, Any]:
    """The advice against the measured comparison of one quadrant (``entry``: comparison.json's) and,
    when the quadrant was swept, truncate_freeze's cut-point curve (``sweep``: {cut: stats})."""
    pick, verdict, regimes = advice.recommendation.regime, entry.verdict, entry.regimes
    winner = regimes[verdict.recommended].val
    out: dict[str, Any] = {
        "pick": pick,
        "winner": verdict.recommended,
        "is_winner": pick == verdict.recommended or pick in verdict.tied,
    }
    if pick in regimes:
        gap = winner.mean - regimes[pick].val.mean
        out.update(gap_val=round(gap, 6), within_one_std=gap <= winner.std)
    else:
        out.update(gap_val=None, within_one_std=False)
    if sweep:
        cuts = [c for c in sweep if c in advice.stages]
        out["spearman_cut_sweep"] = spearman(
            [advice.stages[c].logme for c in cuts], [sweep[c]["val"].mean for c in cuts]
        )
    return out
