"""The comparison at several budgets on one quadrant, reported on its own (issue 37 item 6).

    python tools/budgets_one_quadrant.py <workspace> [--quadrant large_similar] [--budgets 150,600]

The pipeline's `budgets` list runs every quadrant at every budget: with the ImageNet network at 64 px that
is about 30 min per quadrant per 600 steps on 2 cores. This runs the same protocol on one quadrant: at each
budget, every regime of `regimes` tuned at that budget (its conf/regime search), trained once per seed of
`seeds`, the race for the tied regimes up to `compare.max_seeds`, and the call (analysis.verdict), through
the pipeline's cell runner and the stages' own functions, in ``<workspace>`` where `dvc repro pretrain
augment` has finished (its data, image size and network). Cells' state goes to the workspace's resumable
state folder (ProjectPaths.state), so an interrupted run resumes; their runs go to its MLflow experiment.
Printed: the verdict sentence per budget and a markdown table of every regime at every budget (``--out``:
also the comparison as JSON). A report, not the pipeline's answer: the registry and reports/ are not touched.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def parse_budgets(text: str) -> list[int]:
    """'150,600' -> [150, 600]: distinct step counts >= 1, in increasing order."""
    try:
        budgets = [int(b) for b in text.split(",")]
    except ValueError:
        raise SystemExit(f"--budgets {text!r}: allowed: comma-separated integers >= 1, e.g. 150,600") from None
    if not budgets or min(budgets) < 1 or budgets != sorted(set(budgets)):
        raise SystemExit(f"--budgets {text!r}: allowed: distinct integers >= 1 in increasing order, e.g. 150,600")
    return budgets


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--quadrant", default="large_similar")
    parser.add_argument("--budgets", default="150,600", help="optimizer steps per run, comma-separated")
    parser.add_argument("--out", type=Path, help="also write the comparison (core.artifacts.Comparison) as JSON")
    args = parser.parse_args(argv)
    budgets = parse_budgets(args.budgets)

    from transferlab.core.names import QUADRANTS

    if args.quadrant not in QUADRANTS:
        parser.error(f"--quadrant {args.quadrant}: allowed: {', '.join(QUADRANTS)}")
    os.chdir(args.workspace)  # the stages' paths are the project root's (ProjectPaths)
    from transferlab.analysis.verdict import call_level, comparison, sentence
    from transferlab.core.config import load_config
    from transferlab.core.paths import ProjectPaths
    from transferlab.tracking.runs import open_pipeline
    from transferlab.training import parallel
    from transferlab.training.comparison import budget_seeds
    from transferlab.training.race import race_quadrant
    from transferlab.training.runner import CellRunner

    cfg = load_config("finetune", ["regime=finetune_all", f"budgets=[{','.join(map(str, budgets))}]"])
    quadrant, regimes = args.quadrant, list(cfg.regimes)
    runner = CellRunner(cfg, ProjectPaths.of(cfg).state(f"budgets-{quadrant}"), open_pipeline(cfg).run_id)
    level = float(cfg.compare.level)
    at = call_level(level, len(cfg.seeds), int(cfg.compare.max_seeds))
    found: dict = {r: {} for r in regimes}  # {regime: {steps: {quadrant: QuadrantSeeds}}}, as the stages write
    raced: dict = {}
    seconds: dict[int, float] = {}
    print(f"{cfg.model.name} at {cfg.data.image_size} px, batch {cfg.finetune.batch_size}, {quadrant}, {budgets}")
    with parallel.Workers(runner, int(cfg.trainer.cell_processes)) as workers:
        for steps in budgets:
            start = time.perf_counter()
            made_at = budget_seeds(cfg, runner, workers, [(r, quadrant) for r in regimes], steps)
            for r in regimes:
                found[r][str(steps)] = {quadrant: made_at[r, quadrant][0]}
            extra, _ = race_quadrant(cfg, steps, quadrant, runner, workers, found, level, at, {})
            raced[str(steps)] = {quadrant: extra}
            seconds[steps] = time.perf_counter() - start
    made = comparison(found, raced, [quadrant], budgets, level, at)
    if args.out is not None:
        made.save(args.out)
    for steps in budgets:
        print(f"\n**{steps} steps** ({seconds[steps]:.0f} s): {sentence(quadrant, made.budgets[str(steps)][quadrant])}")
    print(
        f"\n| regime | {' | '.join(f'{b} steps: val / test (lr, seeds)' for b in budgets)} |\n"
        f"|---|{'---|' * len(budgets)}"
    )
    for r in regimes:
        cells = []
        for steps in budgets:
            entry = made.budgets[str(steps)][quadrant]
            s = entry.regimes[r]
            flag = " ⏳" if r in entry.verdict.not_converged else ""
            variant = f" {s.variant}" if s.variant else ""
            cells.append(
                f"{s.val.mean:.3f} ± {s.val.std:.3f} / {s.test['acc'].mean:.3f}{flag} "
                f"(lr {s.lr:g}{variant}, {len(s.seeds)})"
            )
        print(f"| {r} | {' | '.join(cells)} |")
    print("\n⏳: a seed still improving over the last third of its budget (analysis.statistics.still_improving).")


if __name__ == "__main__":
    main(sys.argv[1:])
