"""What the data-size curve says: each regime's accuracy per training-set size, and where one regime
overtakes another (on validation means, the criterion; test is reported beside it).

A crossover of regimes a and b lies between two consecutive sizes when the sign of (a - b) on mean
validation accuracy flips between them (sizes where they are exactly level are passed over). Each is
reported with the gap after it and whether that gap exceeds the seeds' spread: with 3 seeds, a
crossover inside the spread is a hint, not a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

from transferlab.analysis.verdict import quadrant_verdict, regime_summary, stats
from transferlab.core.artifacts import (
    CellRecord,
    Comparison,
    QuadrantComparison,
    QuadrantSeeds,
    SizeCurveResults,
    Stats,
)
from transferlab.core.names import QUADRANTS, REGIMES


@dataclass(frozen=True)
class CurvePoint:
    per_class: int
    val: Stats
    test: Stats
    lr: float | None
    variant: str
    tuned_on: str
    from_comparison: bool


Curve = dict[str, list[CurvePoint]]  # regime -> points, smallest first


def seed_spread(a: CurvePoint, b: CurvePoint) -> float:
    """The larger of two regimes' seed std at one size: a gap between them no larger than it is noise."""
    return max(a.val.std, b.val.std)


@dataclass(frozen=True)
class Crossover:
    """``ahead`` overtakes ``behind`` between ``below`` and ``above`` images per class."""

    ahead: str
    behind: str
    below: int
    above: int
    gap: float  # ahead - behind at ``above``, mean validation accuracy
    spread: float  # the larger of the two regimes' seed std at ``above``

    @property
    def beyond_spread(self) -> bool:
        return self.gap > self.spread

    def sentence(self) -> str:
        verdict = "larger than" if self.beyond_spread else "within"
        return (
            f"{self.ahead} overtakes {self.behind} between {self.below} and {self.above} per class "
            f"(at {self.above}: {self.gap:+.3f} on validation, {verdict} the seeds' spread of {self.spread:.3f})"
        )


def curves(results: SizeCurveResults) -> dict[str, Curve]:
    """{quadrant: {regime: points}} with validation and test accuracy over seeds, in QUADRANTS and REGIMES order."""
    table: dict[str, Curve] = {}
    for quadrant in [q for q in QUADRANTS if q in results.quadrants]:
        by_regime = results.quadrants[quadrant]
        table[quadrant] = {}
        for regime in [r for r in REGIMES if r in by_regime]:
            table[quadrant][regime] = [
                CurvePoint(
                    per_class=p.per_class,
                    val=stats([r.val_acc for r in p.seeds.values()]),
                    test=stats([r.test.acc for r in p.seeds.values() if r.test is not None]),
                    lr=p.lr,
                    variant=p.variant,
                    tuned_on=p.tuned_on,
                    from_comparison=p.from_comparison,
                )
                for p in by_regime[regime]
            ]
    return table


def _best_seed(seeds: dict[str, CellRecord]) -> int:
    return int(max(seeds, key=lambda s: (seeds[s].val_acc, -int(s))))


def size_verdicts(results: SizeCurveResults, comparison: Comparison) -> dict[str, dict[int, QuadrantComparison]]:
    """{quadrant: {per_class: the call at that size}} for the subsets (not the full split, which is the
    comparison's own), made as the comparison makes its call: the same paired bootstrap and level. A
    tie goes to the cheaper by the full split's counted cost (the order of the regimes' costs does not
    change with the number of images)."""
    out: dict[str, dict[int, QuadrantComparison]] = {}
    for quadrant, by_regime in results.quadrants.items():
        full = comparison[quadrant]
        sizes = sorted({p.per_class for points in by_regime.values() for p in points if not p.from_comparison})
        out[quadrant] = {}
        for size in sizes:
            points = {r: next(p for p in by_regime[r] if p.per_class == size) for r in REGIMES if r in by_regime}
            seeds = {
                r: QuadrantSeeds(
                    chosen_seed=_best_seed(p.seeds),
                    seeds=p.seeds,
                    lr=p.lr,
                    variant=p.variant,
                    cost=full.regimes[r].cost,
                )
                for r, p in points.items()
            }
            summaries = {r: regime_summary(found, level=full.verdict.level) for r, found in seeds.items()}
            records = {r: found.seeds for r, found in seeds.items()}
            verdict = quadrant_verdict(quadrant, summaries, records, full.verdict.level, full.verdict.call_level)
            out[quadrant][size] = QuadrantComparison(regimes=summaries, verdict=verdict)
    return out


def crossovers(curve: Curve) -> list[Crossover]:
    """Every sign flip of every pair of regimes' mean validation accuracy along the sizes, in size order."""
    found = []
    regimes = list(curve)
    for i, a in enumerate(regimes):
        for b in regimes[i + 1 :]:
            last_sign, last_size = 0, 0
            for pa, pb in zip(curve[a], curve[b]):
                diff = pa.val.mean - pb.val.mean
                sign = (diff > 0) - (diff < 0)
                if sign == 0:
                    continue
                if last_sign and sign != last_sign:
                    ahead, behind = (a, b) if sign > 0 else (b, a)
                    found.append(
                        Crossover(
                            ahead=ahead,
                            behind=behind,
                            below=last_size,
                            above=pa.per_class,
                            gap=round(abs(diff), 6),
                            spread=seed_spread(pa, pb),
                        )
                    )
                last_sign, last_size = sign, pa.per_class
    return sorted(found, key=lambda c: (c.above, REGIMES.index(c.ahead), REGIMES.index(c.behind)))


def best_by_size(curve: Curve) -> list[tuple[int, str]]:
    """The regime with the best mean validation accuracy at each size (REGIMES order breaks a tie)."""
    regimes = list(curve)
    sizes = [p.per_class for p in curve[regimes[0]]]
    return [(n, max(regimes, key=lambda r: (curve[r][i].val.mean, -REGIMES.index(r)))) for i, n in enumerate(sizes)]


def leads_within_spread(curve: Curve, best: list[tuple[int, str]]) -> list[str]:
    """The sizes where the best regime leads the runner-up by no more than their ``seed_spread`` (the test a
    crossover gets), each as "N per class (+gap over runner-up, spread s)"."""
    close = []
    for i, (n, leader) in enumerate(best):
        others = [r for r in curve if r != leader]
        if not others:
            continue
        runner = max(others, key=lambda r: (curve[r][i].val.mean, -REGIMES.index(r)))
        gap = curve[leader][i].val.mean - curve[runner][i].val.mean
        spread = seed_spread(curve[leader][i], curve[runner][i])
        if gap <= spread:
            close.append(f"{n} per class ({gap:+.3f} over {runner}, spread {spread:.3f})")
    return close


def summary_lines(quadrant: str, curve: Curve) -> list[str]:
    """The curve in words: the best regime at each size, whether that changes, and every crossover."""
    best = best_by_size(curve)
    changes = len({regime for _, regime in best}) > 1
    leaders = ", ".join(f"{n}: {regime}" for n, regime in best)
    sizes = ", ".join(str(n) for n, _ in best)
    steady = f"- **{quadrant}**: {best[0][1]} is best on validation at every size ({sizes} per class)"
    if changes:
        head = (
            f"- **{quadrant}**: the best regime on validation changes with the number of labels ({leaders} per class)."
        )
    elif close := leads_within_spread(curve, best):
        within = " and ".join(close)
        head = (
            f"{steady}, but its lead over the runner-up is within the seeds' spread at {within}: a hint, not a finding."
        )
    else:
        head = f"{steady}: more labels would not change the answer there."
    crossing = crossovers(curve)
    if changes and crossing and not any(c.beyond_spread for c in crossing):
        head += " Every crossover is within the seeds' spread: a hint, not a finding."
    lines = [head]
    lines += [f"  - {c.sentence()}." for c in crossing]
    if not crossing:
        lines.append("  - No two regimes cross.")
    return lines
