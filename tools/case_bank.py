"""Add a finished pipeline run's measured cases to the case bank (cases/bank.csv; cases/README.md).

    python tools/case_bank.py <workspace> [--real similar,different] [--bank cases/bank.csv]

``<workspace>`` is a project where `dvc repro` (or `dvc exp run`) has finished: its comparison
(reports/evaluate/comparison.json), its data-size curve when it ran (models/size_curve/results.json),
its prepared data and its pretrained network. Each quadrant at its full size is a case, and each
size of the curve below it another, with the call made at that size as the comparison makes it
(transferlab.analysis.size_curve.size_verdicts). On each case, this code's probes
(transferlab.advise.probe_scores) score the training images that case trained on. The rows of the
workspace's experiment replace any the bank already has for it; the others are kept.

``--real`` names the targets ("similar", "different") that are real images. ``commit`` is the
workspace's git HEAD: the code that measured the case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def harvest(workspace: Path, real: set[str]) -> list:
    import numpy as np

    from transferlab.advise import networks, probe_scores
    from transferlab.analysis.size_curve import size_verdicts
    from transferlab.core.artifacts import Case, Comparison, DatasetCard, QuadrantComparison, SizeCurveResults
    from transferlab.core.config import load_config
    from transferlab.core.names import REGIMES
    from transferlab.core.paths import ProjectPaths
    from transferlab.data.arrays import first_per_class, load_split

    os.chdir(workspace)  # the stages' paths are the project root's (ProjectPaths)
    cfg = load_config("advise", ["advise.bank=null"])
    where = ProjectPaths.of(cfg)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=workspace, capture_output=True, text=True, check=True
    ).stdout.strip()
    comparison = Comparison.load(where.comparison)
    curve = SizeCurveResults.load(where.size_curve_results) if where.size_curve_results.is_file() else None
    by_size = size_verdicts(curve, comparison) if curve and curve.run else {}

    pretrained, random, source = networks(cfg)

    def case(quadrant: str, size: int | None, measured: QuadrantComparison) -> Case:
        images, labels = load_split(where.raw_dataset(quadrant), "train")
        if size is not None:
            keep = first_per_class(labels, size)
            images, labels = images[keep], labels[keep]
        scores, _ = probe_scores(pretrained, random, images, labels, source, cfg.advise.max_images)
        card = DatasetCard.load(where.card(quadrant))
        verdict = measured.verdict
        kind = quadrant.split("_", 1)[1]
        print(f"  {quadrant} {size or 'full'}: {verdict.call} {verdict.tied} -> {verdict.recommended}")
        return Case(
            case=f"{cfg.experiment.name}/{quadrant}/{'full' if size is None else f'n={size}'}",
            scenario=cfg.experiment.name,
            real=kind in real,
            target=quadrant,
            dataset=str(cfg.experiment.targets[quadrant].dataset),
            similar=kind == "similar",
            classes=len(card.classes),
            images_per_class=round(float(np.mean(np.bincount(labels, minlength=len(card.classes)))), 3),
            steps=int(comparison.headline),
            seeds=min(r.val.n for r in measured.regimes.values()),
            commit=commit,
            stages=scores,
            val={r: measured.regimes[r].val.mean for r in REGIMES if r in measured.regimes},
            call=verdict.call,
            tied=verdict.tied,
            recommended=verdict.recommended,
        )

    found = []
    for quadrant, measured in comparison.items():
        found.append(case(quadrant, None, measured))
        for size, at_size in by_size.get(quadrant, {}).items():
            found.append(case(quadrant, size, at_size))
    return found


def case_order(case) -> tuple:
    """Scenario, then the quadrants' order, then size (the full split last)."""
    from transferlab.core.names import QUADRANTS

    size = case.case.rsplit("/", 1)[1]
    return case.scenario, QUADRANTS.index(case.target), int(size[2:]) if size.startswith("n=") else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--real", default="", help="comma-separated: similar, different (the real-image targets)")
    parser.add_argument("--bank", type=Path, default=REPO / "cases" / "bank.csv")
    args = parser.parse_args()
    real = {k for k in args.real.split(",") if k}
    if real - {"similar", "different"}:
        parser.error(f"--real {args.real!r}: allowed similar, different (comma-separated)")

    from transferlab.core.artifacts import CaseBank

    bank = args.bank.resolve()  # before harvest moves into the workspace
    new = harvest(args.workspace.resolve(), real)
    scenario = new[0].scenario if new else ""
    kept = CaseBank.load(bank).cases if bank.is_file() else []
    cases = sorted([c for c in kept if c.scenario != scenario] + new, key=case_order)
    CaseBank(cases=cases).save(bank)
    print(f"{bank}: {len(new)} cases of {scenario}, {len(cases)} in all")


if __name__ == "__main__":
    main()
