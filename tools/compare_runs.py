"""How far two runs of the pipeline are apart: every reported number of one against the other's.

Reads `reports/comparison.csv` (every regime on every quadrant at every budget) and
`reports/metrics.json` (the dvc metrics) of two project folders (two clones, or two copies of
`reports/`) and prints, per column and per metrics field, the largest absolute difference and
where it is, then whether each quadrant's call (clear or tie), recommended regime, tied set and
chosen learning rates are the same. Exit status 1 when a call or a recommendation differs.

Usage: python tools/compare_runs.py RUN_A RUN_B   (prints markdown)
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

KEYS = ("steps", "quadrant", "regime")
SAME_TEXT = ("role", "lr", "seeds", "not_converged")  # choices, compared exactly
HEADLINE = ("winner_acc", "diff_val", "diff_low", "diff_high", "p_better", "advisor")  # metrics.json's own keys
CHOICES = ("winner", "clear", "lr", "seeds")  # in metrics.json as numbers, compared as choices (comparison.csv)


def read_rows(reports: Path) -> dict[tuple[str, ...], dict[str, str]]:
    with (reports / "comparison.csv").open(newline="") as f:
        return {tuple(row[k] for k in KEYS): row for row in csv.DictReader(f)}


def leaves(data, path: tuple[str, ...] = ()):
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, (*path, str(key)))
    elif isinstance(data, int | float) and not isinstance(data, bool):
        yield path, float(data)


def number_spread(a: dict, b: dict) -> dict[str, tuple[float, str]]:
    """Largest |a - b| per field: a headline key, or a regime metric's last key (its quadrant and regime
    dropped). Choices coded as numbers (the winner's index, learning rates) are left to ``calls``."""
    found: dict[str, tuple[float, str]] = {}
    b_leaves = dict(leaves(b))
    for path, value in leaves(a):
        if path not in b_leaves:
            continue
        if path[0] in CHOICES:
            continue
        field = path[0] if path[0] in HEADLINE else path[-1]
        gap = abs(value - b_leaves[path])
        if field not in found or gap > found[field][0]:
            found[field] = (gap, "/".join(path))
    return found


def column_spread(rows_a: dict, rows_b: dict) -> tuple[dict[str, tuple[float, str]], list[str]]:
    spread: dict[str, tuple[float, str]] = {}
    differing: list[str] = []
    for key, row in rows_a.items():
        other = rows_b.get(key)
        if other is None:
            differing.append(f"{'/'.join(key)}: only in the first run")
            continue
        for column, value in row.items():
            if column in KEYS or column in ("course_note",):
                continue
            if column in SAME_TEXT:
                if value != other[column]:
                    differing.append(f"{'/'.join(key)} {column}: {value} vs {other[column]}")
                continue
            try:
                gap = abs(float(value) - float(other[column]))
            except ValueError:
                continue
            if column not in spread or gap > spread[column][0]:
                spread[column] = (gap, "/".join(key))
    return spread, differing


def calls(rows: dict) -> dict[tuple[str, str], tuple[str, tuple[str, ...]]]:
    """(steps, quadrant) -> (recommended, tied set)."""
    recommended: dict[tuple[str, str], str] = {}
    tied: dict[tuple[str, str], list[str]] = {}
    for (steps, quadrant, regime), row in rows.items():
        tied.setdefault((steps, quadrant), [])
        if row["role"] == "recommended":
            recommended[(steps, quadrant)] = regime
        if row["role"] in ("recommended", "tied"):
            tied[(steps, quadrant)].append(regime)
    return {k: (recommended.get(k, "-"), tuple(sorted(t))) for k, t in tied.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args(argv)
    a_reports, b_reports = (p / "reports" if (p / "reports").is_dir() else p for p in (args.run_a, args.run_b))
    rows_a, rows_b = read_rows(a_reports), read_rows(b_reports)
    spread, differing = column_spread(rows_a, rows_b)
    metrics = number_spread(
        json.loads((a_reports / "metrics.json").read_text()), json.loads((b_reports / "metrics.json").read_text())
    )
    print("| number | largest difference | where |")
    print("|---|---|---|")
    for name, (gap, where) in {**{f"comparison.csv {k}": v for k, v in spread.items()}, **metrics}.items():
        print(f"| {name} | {gap:.3f} | {where} |")
    calls_a, calls_b = calls(rows_a), calls(rows_b)
    changed = 0
    print()
    for key in sorted(calls_a):
        same = calls_a[key] == calls_b.get(key)
        changed += not same
        (rec_a, tied_a), (rec_b, tied_b) = calls_a[key], calls_b.get(key, ("-", ()))
        print(
            f"- {key[1]} at {key[0]} steps: recommended {rec_a} / {rec_b}, tied set "
            f"{', '.join(tied_a) or '-'} / {', '.join(tied_b) or '-'}: {'same' if same else 'DIFFERENT'}"
        )
    for line in differing:
        print(f"- differs: {line}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
