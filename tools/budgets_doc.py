"""docs/budgets.md's tables, copied from the reports of a run with two budgets (no number typed by hand).

python tools/budgets_doc.py REPORTS_FOLDER   (prints markdown: the budget table, every regime at both
budgets from comparison.csv, then the larger budget's sentences and headline table)
"""

import csv
import sys
from pathlib import Path

reports = Path(sys.argv[1])
summary = (reports / "summary.md").read_text().splitlines()


def section(start: str, stop_prefixes: tuple[str, ...]) -> list[str]:
    i = next(n for n, line in enumerate(summary) if line.startswith(start))
    out: list[str] = []
    for line in summary[i:]:
        if out and line.startswith(stop_prefixes):
            break
        out.append(line)
    return out


rows = list(csv.DictReader((reports / "comparison.csv").open()))
by = {(r["steps"], r["quadrant"], r["regime"]): r for r in rows}
quadrants = list(dict.fromkeys(r["quadrant"] for r in rows))
regimes = ["freeze_all", "truncate_freeze", "finetune_all", "scratch"]
table = ["| quadrant | " + " | ".join(f"{g} 150 → 600" for g in regimes) + " |", "|---" * 5 + "|"]
for q in ["small_similar", "small_different", "large_similar", "large_different"]:
    cells = []
    for g in regimes:
        a, b = by[("150", q, g)], by[("600", q, g)]
        mark = " ⏳" if b["not_converged"] == "1" else ""
        cells.append(f"{float(a['val_acc']):.3f} → {float(b['val_acc']):.3f}{mark} (lr {a['lr']} / {b['lr']})")
    table.append(f"| {q} | " + " | ".join(cells) + " |")
parts = [
    *section("## The verdict at each budget", ("![",)),
    "",
    "Every regime's validation accuracy at each budget, with the learning rate tuned at that budget "
    "(⏳: still rising over the last third of the 600-step budget), from `reports/comparison.csv`:",
    "",
    *table,
    "",
    "### The verdict at 600 steps",
    "",
    *[line for line in summary[:8] if line.startswith("- **")],
    "",
    *section("At 600 optimizer steps", ("## ",)),
]
print("\n".join(parts).rstrip())
