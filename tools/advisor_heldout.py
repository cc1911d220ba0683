"""Score every rule on the cases a bank did not hold yet: the advisor truly held out.

    git show <commit>:cases/bank.csv > /tmp/bank_before.csv
    python tools/advisor_heldout.py /tmp/bank_before.csv [--bank cases/bank.csv] [--without-target]

The bank as it stood at <commit> picks for every case of ``--bank`` it lacks (by case name), beside the
a-priori rules and the constant ones. Prints a markdown table of hits, mean and worst regret, and how often
the pick is the recommended regime itself (docs/advisor.md records the run after scenarios 3 and 4 joined).
``--without-target`` also drops, per new case, the old cases of its own target (the same folder at another
size), as the bank's leave-target-out score does.

"bank, cost-aware vote" is a variant written before the cases it is judged on were measured (not the
advisor's rule): on the same nearest cases, the regime with the most hits, then the least regret clipped at
0 (a tied regime that scored higher earns nothing), then the cheapest, which is the comparison's own rule
for ties.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def table(before: Path, bank: Path, small_per_class: int = 100, without_target: bool = False) -> str:
    import numpy as np

    from transferlab.analysis.advice import (
        CHEAPEST_FIRST,
        bank_pick,
        course_note_pick,
        logme_rule_pick,
        rule_score,
        target_of,
    )
    from transferlab.core.artifacts import Case, CaseBank
    from transferlab.core.names import REGIMES

    old = CaseBank.load(before).cases
    known = {c.case for c in old}
    new = [c for c in CaseBank.load(bank).cases if c.case not in known]
    if not old or not new:
        raise SystemExit(f"error: {before} has {len(old)} cases and {bank} {len(new)} new ones; both must be > 0")

    by_name = {c.case: c for c in old}

    def bank_for(c: Case) -> list[Case]:
        return [o for o in old if target_of(o) != target_of(c)] if without_target else old

    # One vote per new case; both bank rules read it (the pick, and the neighbours it names).
    voted = {c.case: bank_pick(c.stages, c.classes, c.images_per_class, bank_for(c)) for c in new}

    def from_bank(c: Case) -> str:
        return voted[c.case][0].regime

    def cost_aware(c: Case) -> str:
        near = [by_name[n.case] for n in voted[c.case][1].neighbours]
        return min(
            REGIMES,
            key=lambda r: (
                -sum(n.hit(r) for n in near),
                round(float(np.mean([max(n.regret(r), 0.0) for n in near])), 9),
                CHEAPEST_FIRST.index(r),
            ),
        )

    rules = {
        f"bank ({len(old)} cases before{', own target dropped' if without_target else ''})": from_bank,
        "bank, cost-aware vote": cost_aware,
        "LogME rule (a priori)": lambda c: logme_rule_pick(c, small_per_class),
        "course note": lambda c: course_note_pick(c, small_per_class),
        "always finetune_all": lambda c: "finetune_all",
        "always freeze_all": lambda c: "freeze_all",
        "always truncate_freeze": lambda c: "truncate_freeze",
    }
    lines = [
        f"{len(new)} new cases: {', '.join(sorted(c.case for c in new))}",
        "",
        "| rule | hits | mean regret | worst regret | the recommended regime itself |",
        "|---|---|---|---|---|",
    ]
    picks = {c.case: {name: rule(c) for name, rule in rules.items()} for c in new}
    for name in rules:
        score = rule_score(name, new, picks)  # the scoring the bank's own held-out table uses
        exact = sum(picks[c.case][name] == c.recommended for c in new)
        lines.append(
            f"| {name} | {score.hits}/{score.cases} | {score.mean_regret:+.3f} | {score.worst_regret:+.3f} "
            f"| {exact}/{len(new)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="the bank as it stood before (a cases/bank.csv)")
    parser.add_argument("--bank", type=Path, default=REPO / "cases" / "bank.csv")
    parser.add_argument("--without-target", action="store_true", help="drop each new case's own target")
    args = parser.parse_args()
    print(table(args.before, args.bank, without_target=args.without_target))


if __name__ == "__main__":
    main()
