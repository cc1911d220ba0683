"""The advisor's rules, and how their advice compares with the measured comparison.

**The bank's pick** (``bank_pick``, what ``advise`` recommends when cases/bank.csv is there): each
case is described by five numbers from the advisor's probes (``DESCRIPTORS``); the ``NEIGHBOURS``
measured cases nearest to it (Euclidean, each number scaled by its spread over the bank) vote: the
pick is the regime with the least mean regret on them (then the most hits, then the cheaper).
Nothing is fitted but the scale, so leaving a case out of the bank is the whole of its
cross-validation (``score_rules``: leave one case out, and the stricter leave its whole target out).

**The a-priori LogME rule** (``recommend``, kept as a baseline) is stated a priori (nothing in it
was fitted to the comparison's results, test or validation); it reads three numbers the ``advise``
stage computes from one forward pass:

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

import math
from typing import Any

import numpy as np

from transferlab.core.artifacts import (
    Advice,
    AdviceScores,
    BankAdvice,
    Case,
    Neighbour,
    QuadrantComparison,
    Recommendation,
    RuleScore,
    StageScores,
    Stats,
)
from transferlab.core.names import COURSE_NOTE, REGIMES

NEIGHBOURS = 3
# Training cost order (training FLOPs, then docs/regimes.md's order): a tie in the vote goes to the cheaper.
CHEAPEST_FIRST = ("truncate_freeze", "freeze_all", "finetune_all", "scratch")
DESCRIPTORS = (
    "log10 images per class",
    "linear probe at the last stage (pretrained)",
    "linear probe gained by the best earlier cut",
    "linear probe of random features (best stage)",
    "k-NN gained by pretraining (best stage, pretrained - random)",
)


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
    when the quadrant was swept, truncate_freeze's cut-point curve (``sweep``: {cut: stats}).

    A **hit** is a pick that is the recommended regime or in the tied set; its **regret** is the
    recommended regime's mean validation accuracy minus the pick's (negative: a tied regime that
    scored higher but cost more)."""
    verdict, regimes = entry.verdict, entry.regimes
    recommended = regimes[verdict.recommended].val.mean

    def judged(pick: str) -> tuple[bool, float | None]:
        hit = pick == verdict.recommended or pick in verdict.tied
        return hit, round(recommended - regimes[pick].val.mean, 6) if pick in regimes else None

    pick, a_priori = advice.recommendation.regime, advice.a_priori.regime
    hit, regret = judged(pick)
    a_priori_hit, a_priori_regret = judged(a_priori)
    out: dict[str, Any] = {
        "pick": pick,
        "winner": verdict.recommended,
        "tied": verdict.tied,
        "hit": hit,
        "regret": regret,
        "a_priori": a_priori,
        "a_priori_hit": a_priori_hit,
        "a_priori_regret": a_priori_regret,
    }
    if sweep:
        cuts = [c for c in sweep if c in advice.stages]
        out["spearman_cut_sweep"] = spearman(
            [advice.stages[c].logme for c in cuts], [sweep[c]["val"].mean for c in cuts]
        )
    return out


def lift(accuracy: float, classes: int) -> float:
    """Accuracy above chance, as a fraction of the room above chance (0: chance, 1: perfect)."""
    chance = 1.0 / classes
    return (accuracy - chance) / (1.0 - chance)


def descriptor(stages: dict[str, StageScores], classes: int, images_per_class: float) -> np.ndarray:
    """The five numbers of ``DESCRIPTORS`` for one case (stages in network order)."""
    last = list(stages)[-1]
    probe = {s: lift(v.probe, classes) for s, v in stages.items()}
    knn_gain = max(lift(v.knn, classes) for v in stages.values()) - max(
        lift(v.knn_random, classes) for v in stages.values()
    )
    return np.array(
        [
            math.log10(images_per_class),
            probe[last],
            max(probe.values()) - probe[last],
            max(lift(v.probe_random, classes) for v in stages.values()),
            knn_gain,
        ]
    )


def best_cut(stages: dict[str, StageScores]) -> str:
    """The earlier stage (not the last) whose pretrained features the linear probe scores best."""
    names = list(stages)
    return max(names[:-1] or names, key=lambda s: (stages[s].probe, -names.index(s)))


def _scaled_distances(query: np.ndarray, bank: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.linalg.norm((bank - query) / scale, axis=1)


def _scale(bank: np.ndarray) -> np.ndarray:
    spread = bank.std(axis=0) if len(bank) > 1 else np.ones(bank.shape[1])
    return np.where(spread > 1e-9, spread, 1.0)


def _own_nearest(bank: np.ndarray, scale: np.ndarray) -> float:
    """The largest distance from a bank case to its nearest other case: farther than that is unlike the bank."""
    if len(bank) < 2:
        return math.inf
    nearest = []
    for i in range(len(bank)):
        d = _scaled_distances(bank[i], np.delete(bank, i, axis=0), scale)
        nearest.append(float(d.min()))
    return max(nearest)


def bank_pick(
    stages: dict[str, StageScores], classes: int, images_per_class: float, cases: list[Case]
) -> tuple[Recommendation, BankAdvice]:
    """The regime with the least mean regret on the ``NEIGHBOURS`` nearest ``cases``."""
    if not cases:
        raise ValueError("bank_pick needs at least one case")
    query = descriptor(stages, classes, images_per_class)
    bank = np.stack([descriptor(c.stages, c.classes, c.images_per_class) for c in cases])
    scale = _scale(bank)
    distance = _scaled_distances(query, bank, scale)
    order = sorted(range(len(cases)), key=lambda i: (round(float(distance[i]), 9), cases[i].case))
    near = [cases[i] for i in order[:NEIGHBOURS]]
    regrets = {r: float(np.mean([c.regret(r) for c in near])) for r in REGIMES}
    hits = {r: sum(c.hit(r) for c in near) for r in REGIMES}
    pick = min(REGIMES, key=lambda r: (round(regrets[r], 9), -hits[r], CHEAPEST_FIRST.index(r)))
    nearest = float(distance[order[0]])
    unlike = nearest > _own_nearest(bank, scale)
    cut = best_cut(stages) if pick == "truncate_freeze" else None
    named = ", ".join(f"{c.case} ({c.recommended})" for c in near)
    reason = (
        f"on the {len(near)} measured cases nearest to this one ({named}), {pick} lost the least "
        f"validation accuracy to the recommended regime: {regrets[pick]:.3f} on average, a hit on "
        f"{hits[pick]} of {len(near)}"
        + (f"; cut at {cut}, the earlier stage the linear probe scores best" if cut else "")
        + (
            "; this case is unlike any in the bank (farther from its nearest case than any bank case "
            "is from its own): treat the pick as a guess"
            if unlike
            else ""
        )
    )
    advice = BankAdvice(
        expected_regret=round(regrets[pick], 6),
        hit_rate=round(hits[pick] / len(near), 6),
        unlike_bank=unlike,
        nearest_distance=round(nearest, 6),
        bank_cases=len(cases),
        neighbours=[
            Neighbour(
                case=cases[i].case,
                distance=round(float(distance[i]), 6),
                recommended=cases[i].recommended,
                tied=cases[i].tied,
                regret=cases[i].regret(pick),
            )
            for i in order[:NEIGHBOURS]
        ],
    )
    return Recommendation(regime=pick, cut_at=cut, reason=reason), advice


def course_note_pick(case: Case, small_per_class: int) -> str:
    size = "small" if case.images_per_class <= small_per_class else "large"
    return COURSE_NOTE[f"{size}_{'similar' if case.similar else 'different'}"]


def logme_rule_pick(case: Case, small_per_class: int) -> str:
    stages = list(case.stages)
    return recommend(
        case.images_per_class,
        stages,
        {s: case.stages[s].logme for s in stages},
        {s: case.stages[s].logme_random for s in stages},
        small_per_class,
    ).regime


def target_of(case: Case) -> str:
    """The cases of one target at every size (held out together by the stricter cross-validation)."""
    return f"{case.scenario}/{'similar' if case.similar else 'different'}"


def rule_picks(cases: list[Case], small_per_class: int) -> dict[str, dict[str, str]]:
    """case -> rule -> pick, the bank's picks with the case (or its whole target) held out."""
    picks: dict[str, dict[str, str]] = {}
    for case in cases:
        others = [c for c in cases if c.case != case.case]
        elsewhere = [c for c in cases if target_of(c) != target_of(case)]
        found = {
            "bank, leave one case out": bank_pick(case.stages, case.classes, case.images_per_class, others)[0].regime,
            "bank, leave its target out": (
                bank_pick(case.stages, case.classes, case.images_per_class, elsewhere)[0].regime if elsewhere else ""
            ),
            "LogME rule (a priori)": logme_rule_pick(case, small_per_class),
            "course note": course_note_pick(case, small_per_class),
            "always finetune_all": "finetune_all",
            "always freeze_all": "freeze_all",
        }
        picks[case.case] = found
    return picks


def rule_score(rule: str, cases: list[Case], picks: dict[str, dict[str, str]]) -> RuleScore:
    chosen = [(c, picks[c.case][rule]) for c in cases if picks[c.case][rule]]
    regrets = [c.regret(p) for c, p in chosen]
    hits = sum(c.hit(p) for c, p in chosen)
    return RuleScore(
        rule=rule,
        cases=len(chosen),
        hits=hits,
        hit_rate=round(hits / len(chosen), 6) if chosen else 0.0,
        mean_regret=round(float(np.mean(regrets)), 6) if chosen else 0.0,
        worst_regret=round(float(np.max(regrets)), 6) if chosen else 0.0,
    )


def score_rules(cases: list[Case], small_per_class: int) -> AdviceScores:
    """Every rule's hits and regret on the bank, on all cases and on the real ones."""
    picks = rule_picks(cases, small_per_class)
    rules = list(next(iter(picks.values()))) if picks else []
    groups = {"all": cases, "real": [c for c in cases if c.real]}
    return AdviceScores(
        bank_cases=len(cases),
        real_cases=len(groups["real"]),
        scores={g: {r: rule_score(r, members, picks) for r in rules} for g, members in groups.items()},
        picks=picks,
    )
