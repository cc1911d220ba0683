"""The comparison's verdict: per budget and quadrant, a statistical call made on validation data only.

Pure functions over the records the ``finetune@<regime>`` stages and the race write (no torch, no
MLflow); the test split is summarised for every regime and never read to choose.

- The **leader** is the regime with the best mean validation accuracy over its seeds (a tie in the
  means goes to the regime listed first in docs/regimes.md's order).
- Against each rival, the leader's accuracy difference with an interval from a **paired bootstrap**
  over their shared seeds and the validation images (``analysis.statistics``), and P(leader > rival).
- The **call** is "clear" when every rival is separated (its interval at ``call_level`` excludes 0),
  else a **tie** between the leader and the rivals it is not separated from. The call's level is
  ``compare.level`` split over the looks the race can take (Bonferroni: with 3 seeds and at most 5,
  3 looks, 98.3%), so that racing seeds does not make false "clear" calls likelier; the intervals
  shown are at ``compare.level`` (95%).
- The **recommendation** is the leader when clear; in a tie, the cheapest regime of the tied set by
  counted cost: training FLOPs, then inference FLOPs, then trainable parameters (``training.cost``),
  then docs/regimes.md's order.
- A regime whose runs' validation accuracy still rose over the last third of their budget, by more
  than the noise of one validation measurement (``analysis.statistics.still_improving``), is
  flagged: the verdict "may change with a larger budget".
"""

from __future__ import annotations

import math

import numpy as np

from transferlab.analysis.statistics import correctness, improvement, paired_bootstrap, still_improving
from transferlab.core.artifacts import (
    CellRecord,
    Comparison,
    Cost,
    QuadrantComparison,
    QuadrantSeeds,
    RegimeSummary,
    Rival,
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


def call_level(level: float, seeds: int, max_seeds: int) -> float:
    """The level of each look: ``level`` split over the race's looks (one per seed it may add, plus the first)."""
    looks = max(1, max_seeds - seeds + 1)
    return round(1 - (1 - level) / looks, 6)


def regime_summary(
    found: QuadrantSeeds, extra: dict[str, CellRecord] | None = None, level: float = 0.95
) -> RegimeSummary:
    """One regime on one quadrant: its finetune stage's seeds, plus the race's ``extra`` seeds."""
    records = {**found.seeds, **(extra or {})}
    seeds = sorted(records, key=int)
    runs = [records[s] for s in seeds]
    best = max(seeds, key=lambda s: (records[s].val_acc, -int(s)))
    curves: dict[str, list[float]] = {s: c for s in seeds if (c := records[s].val_by_epoch) is not None}
    n_val = max((len(records[s].val_correct or "") for s in seeds), default=0)
    improving = {}
    if still_improving(list(curves.values()), n_val):
        improving = {s: [round(v, 6) for v in rise] for s, c in curves.items() if (rise := improvement(c))}
    correct = _correct(records, seeds) if all(records[s].val_correct for s in seeds) else None
    alone = paired_bootstrap(correct, np.zeros_like(correct), level=level) if correct is not None else None
    return RegimeSummary(
        seeds=[int(s) for s in seeds],
        val_acc=[r.val_acc for r in runs],
        val=stats([r.val_acc for r in runs]),
        test={m: stats([getattr(r.test, m) for r in runs if r.test is not None]) for m in TEST_METRICS},
        test_acc=[r.test.acc for r in runs if r.test is not None],
        chosen_seed=int(best),
        lr=found.lr,
        variant=found.variant,
        tuned=found.search is not None,
        at_edge=found.search.at_edge if found.search is not None else False,
        val_low=alone.low if alone else 0.0,
        val_high=alone.high if alone else 0.0,
        race_seeds=sorted(int(s) for s in (extra or {})),
        still_improving=improving,
        cost=found.cost,
    )


def _correct(records: dict[str, CellRecord], seeds: list[str]) -> np.ndarray:
    return np.stack([correctness(records[s].val_correct or "") for s in seeds])


def rival(leader: str, other: str, records: dict[str, dict[str, CellRecord]], level: float, at: float) -> Rival:
    """The leader against ``other`` on their shared seeds: the interval at ``level``, separated at ``at``."""
    shared = sorted(set(records[leader]) & set(records[other]), key=int)
    a, b = _correct(records[leader], shared), _correct(records[other], shared)
    shown = paired_bootstrap(a, b, level=level)
    called = shown if at == level else paired_bootstrap(a, b, level=at)
    return Rival(
        regime=other,
        diff=shown.mean,
        low=shown.low,
        high=shown.high,
        p_better=shown.p_better,
        seeds=len(shared),
        separated=called.separated,
    )


def cost_key(summary: RegimeSummary, regime: str) -> tuple:
    cost = summary.cost
    order = REGIMES.index(regime) if regime in REGIMES else len(REGIMES)
    if cost is None:
        return (math.inf, math.inf, math.inf, order)
    return (cost.train_flops, cost.inference_flops, cost.trainable_params, order)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.0f}x" if b > 0 and a / b >= 10 else f"{a / b:.1f}x" if b > 0 else "-"


def quadrant_verdict(
    quadrant: str,
    by_regime: dict[str, RegimeSummary],
    records: dict[str, dict[str, CellRecord]],
    level: float,
    at: float,
) -> Verdict:
    """The call on one quadrant from every regime's summary and its per-seed records."""
    order = {r: i for i, r in enumerate(REGIMES)}
    ranked = sorted(by_regime, key=lambda r: (-by_regime[r].val.mean, order.get(r, len(order))))
    leader = ranked[0]
    rivals = {r: rival(leader, r, records, level, at) for r in ranked[1:]}
    tied = [leader] + [r for r in ranked[1:] if not rivals[r].separated]
    call = "clear" if len(tied) == 1 else "tie"
    recommended = min(tied, key=lambda r: cost_key(by_regime[r], r))
    runner_up = ranked[1] if len(ranked) > 1 else None
    note = COURSE_NOTE.get(quadrant, "")
    return Verdict(
        leader=leader,
        ranking=ranked,
        call=call,
        tied=tied,
        recommended=recommended,
        reason=_reason(leader, recommended, tied, by_regime, rivals, runner_up, level, at),
        rivals=rivals,
        runner_up=runner_up,
        level=level,
        call_level=at,
        chosen_seed=by_regime[recommended].chosen_seed,
        course_note=note,
        course_note_rank=ranked.index(note) + 1 if note in by_regime else None,
        not_converged=[r for r in ranked if by_regime[r].still_improving],
    )


def _reason(
    leader: str,
    recommended: str,
    tied: list[str],
    by_regime: dict[str, RegimeSummary],
    rivals: dict[str, Rival],
    runner_up: str | None,
    level: float,
    at: float,
) -> str:
    if runner_up is None:
        return f"{leader} is the only regime run"
    second = rivals[runner_up]
    interval = f"{second.diff:+.3f}, {level:.0%} interval [{second.low:+.3f}, {second.high:+.3f}]"
    if len(tied) == 1:
        return (
            f"clear winner {leader}: ahead of {runner_up} by {interval} validation accuracy, "
            f"P(better) = {second.p_better:.2f}"
        )
    # The shown interval can exclude 0 while the call's wider one (the race's looks) does not.
    unseparated = f"; not separated at the call's {at:.1%} level" if second.low > 0 else ""
    text = (
        f"tie between {', '.join(tied)} ({leader} ahead of {runner_up} by {interval}, P(better) = "
        f"{second.p_better:.2f}{unseparated})"
    )
    if recommended == leader:
        return text + f"; {leader} leads and is also the cheapest of them"
    a, b = by_regime[leader].cost, by_regime[recommended].cost
    if a is None or b is None:
        return text + f"; {recommended} is the cheapest of the tied regimes"
    return text + f"; {recommended} {why_cheaper(a, b, leader)}"


def why_cheaper(a: Cost, b: Cost, leader: str) -> str:
    """Why the recommended regime (cost ``b``) goes before the leader (cost ``a``): the first of
    ``cost_key``'s criteria that differs, or, when they all agree, the regime order."""
    if a.train_flops != b.train_flops:
        ratio = _ratio(a.train_flops, b.train_flops)
        return f"is the cheapest of the tied regimes ({ratio} fewer training FLOPs than {leader})"
    if a.inference_flops != b.inference_flops:
        return (
            f"trains on the same FLOPs as {leader} and is the cheapest to run "
            f"({_ratio(a.inference_flops, b.inference_flops)} fewer inference FLOPs)"
        )
    if a.trainable_params != b.trainable_params:
        return (
            f"trains on the same FLOPs as {leader} with fewer trainable parameters "
            f"({_ratio(a.trainable_params, b.trainable_params)} fewer)"
        )
    return (
        f"costs the same as {leader} (training and inference FLOPs, trainable parameters): the tie goes "
        f"to the regime first in the order {', '.join(REGIMES)}"
    )


def comparison(
    results: dict[str, dict[str, dict[str, QuadrantSeeds]]],
    race: dict[str, dict[str, dict[str, dict[str, CellRecord]]]],
    quadrants: list[str],
    budgets: list[int],
    level: float,
    at: float,
) -> Comparison:
    """Every regime's summary and the call per budget and quadrant.

    ``results``: {regime: {steps: {quadrant: its finetune results}}}; ``race``: {steps: {quadrant: {regime:
    {seed: record}}}}, the seeds the race added."""
    out: dict[str, dict[str, QuadrantComparison]] = {}
    for steps in budgets:
        key = str(steps)
        out[key] = {}
        for quadrant in quadrants:
            extra = race.get(key, {}).get(quadrant, {})
            by_regime = {
                r: regime_summary(results[r][key][quadrant], extra.get(r), level) for r in REGIMES if r in results
            }
            records = {r: {**results[r][key][quadrant].seeds, **extra.get(r, {})} for r in by_regime}
            out[key][quadrant] = QuadrantComparison(
                regimes=by_regime, verdict=quadrant_verdict(quadrant, by_regime, records, level, at)
            )
    return Comparison(headline=str(budgets[-1]), budgets=out)


def contenders(verdict: Verdict) -> list[str]:
    """The regimes the race gives another seed: the tied set, while the call is a tie."""
    return list(verdict.tied) if verdict.call == "tie" else []


def sentence(quadrant: str, entry: QuadrantComparison) -> str:
    """The verdict of one quadrant in words a newcomer reads without the tables, from the numbers."""
    v, regimes = entry.verdict, entry.regimes
    best = regimes[v.recommended]
    test = best.test.get("acc")
    shown = f"{best.val.mean:.3f} validation" + (f", {test.mean:.3f} test" if test is not None else "")
    if v.runner_up is None:
        text = f"**{quadrant}**: `{v.recommended}` ({shown}) is the only regime run"
    elif v.call == "clear":
        r = v.rivals[v.runner_up]
        text = (
            f"**{quadrant}**: use `{v.recommended}` ({shown}): it beats the runner-up `{v.runner_up}` by "
            f"{r.diff:.3f} validation accuracy, {v.level:.0%} interval [{r.low:.3f}, {r.high:.3f}], P(better) = "
            f"{r.p_better:.2f}"
        )
    else:
        text = f"**{quadrant}**: use `{v.recommended}` ({shown}): {v.reason}"
    note = v.course_note
    if note == v.recommended:
        text += ". The course note prescribes the same regime"
    elif v.course_note_rank is not None:
        text += f". The course note prescribes `{note}` (rank {v.course_note_rank} of {len(regimes)} on validation)"
    if v.not_converged:
        text += (
            f". Not converged: {', '.join(v.not_converged)} still improved over the last third of the budget, "
            f"so the call may change with a larger budget"
        )
    if entry.near_copies:
        text += f". {leakage_warning(entry.near_copies)}"
    return text + "."


def leakage_warning(near_copies: int) -> str:
    """The warning beside a call whose target folder held near-copies across its own splits."""
    return (
        f"Leakage warning: this target's folder held {near_copies} near-copies of its own val/test images in "
        f"another split (left out by download: manifest.csv); copies the check cannot see (rotated by a few "
        f"degrees, re-framed, recoloured) may remain, so its scores may be optimistic"
    )
