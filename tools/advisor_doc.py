"""docs/advisor.md's measured part, computed from cases/bank.csv by the advisor's own scoring (no number
typed by hand): every rule's hits and regret, and every case with each rule's pick.

    python tools/advisor_doc.py           # rewrite the part between the markers of docs/advisor.md
    python tools/advisor_doc.py --check   # exit 1 when the doc is not what the bank gives (tests/test_readme.py)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
DOC = REPO / "docs" / "advisor.md"
BEGIN, END = "<!-- measured: tools/advisor_doc.py -->", "<!-- end of measured -->"
SHORT = {
    "bank, leave one case out": "bank (1 out)",
    "bank, leave its target out": "bank (target out)",
    "LogME rule (a priori)": "LogME rule",
    "course note": "course note",
    "always finetune_all": "finetune_all",
    "always freeze_all": "freeze_all",
}


def measured() -> str:
    from omegaconf import OmegaConf

    from transferlab.analysis.advice import score_rules
    from transferlab.core.artifacts import CaseBank

    params = OmegaConf.load(REPO / "params.yaml")
    cases = CaseBank.load(REPO / str(params.advise.bank)).cases
    found = score_rules(cases, int(params.advise.small_per_class))
    rules = list(found.scores["all"])
    lines = [
        f"{found.bank_cases} cases, {found.real_cases} on real images "
        f"(`advise.small_per_class: {params.advise.small_per_class}` for the rules that read a size line).",
        "",
        "The last column of each group: how often the pick is the recommended regime itself (in a tie, the "
        "cheapest of the tied set), which a hit does not ask.",
        "",
        "| rule | all: hit rate | mean regret | worst regret | the recommended | real: hit rate | mean regret "
        "| worst regret | the recommended |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = {"all": cases, "real": [c for c in cases if c.real]}
    for rule in rules:
        row = [rule]
        for group, members in groups.items():
            s = found.scores[group][rule]
            exact = sum(found.picks[c.case][rule] == c.recommended for c in members)
            row += [f"{s.hit_rate:.2f} ({s.hits}/{s.cases})", f"{s.mean_regret:.3f}", f"{s.worst_regret:.3f}"]
            row.append(f"{exact}/{len(members)}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Every case: the measured call (validation accuracy; **bold**, a pick that is a hit) and each rule's pick.",
        "",
        "| case | real | per class | call | tied | recommended | " + " | ".join(SHORT[r] for r in rules) + " |",
        "|---|---|---|---|---|---|" + "---|" * len(rules),
    ]
    for case in cases:
        picks = found.picks[case.case]
        shown = [
            (f"**{p}**" if case.hit(p) else p) + (f" ({case.regret(p):+.3f})" if not case.hit(p) else "") if p else "-"
            for p in (picks[r] for r in rules)
        ]
        lines.append(
            f"| {case.case} | {'yes' if case.real else 'no'} | {case.images_per_class:g} | {case.call} | "
            f"{', '.join(case.tied)} | {case.recommended} | " + " | ".join(shown) + " |"
        )
    lines += ["", "A miss shows its regret in brackets: the recommended regime's validation accuracy minus the pick's."]
    return "\n".join(lines)


def main() -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{measured()}\n{END}{tail}"
    if "--check" in sys.argv:
        if new != text:
            print(f"{DOC} is not what cases/bank.csv gives: run `python tools/advisor_doc.py`")
            sys.exit(1)
        return
    DOC.write_text(new)


if __name__ == "__main__":
    main()
