"""The data-size curve: every regime on nested subsets of a target's training split.

For each quadrant of ``size_curve.quadrants`` (the large ones by default) and each size N of
``size_curve.per_class`` smaller than the split the comparison trained on, every regime of ``regimes``
trains on the first N images of each class (nested: the 30 contain the 10), once per seed of ``seeds``,
at the headline budget. The full split is the comparison's own runs, read back from models/finetune.

Each point runs at the recipe (learning rate, variant) its regime's search chose on the quadrant of
the same target whose training split is nearest in size on a log scale: a 10-per-class subset of
large_similar gets small_similar's choice (30 per class), a 300-per-class one large_similar's (500).
Searching again at every size would cost several times the curve itself. Frozen regimes train on
features cached once per (subset, cut), like everywhere else (``training.runner``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.artifacts import (
    DatasetCard,
    QuadrantSeeds,
    RegimeResults,
    SearchRecord,
    SizeCurveResults,
    SizePoint,
)
from transferlab.core.config import save_config
from transferlab.core.console import progress_line
from transferlab.core.files import staged_dir
from transferlab.core.names import same_target
from transferlab.core.paths import CONFIG, RESULTS, ProjectPaths
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training import parallel
from transferlab.training.comparison import seed_spec
from transferlab.training.runner import CellRunner, CellSpec, headline_budget


def full_per_class(card: DatasetCard, train_per_class: int | None) -> int:
    """Images per class of the training split the comparison used (its smallest class, or
    ``finetune.train_per_class`` when that is smaller)."""
    smallest = min(card.counts_per_class["train"].values())
    return smallest if train_per_class is None else min(smallest, train_per_class)


def subset_sizes(per_class: list[int | None], full: int) -> list[int]:
    """The curve's sizes on a split of ``full`` images per class: each N below it, then ``full`` itself
    (null, or any N at or above ``full``, is the full split)."""
    return sorted({n for n in per_class if n is not None and n < full} | {full})


def nearest_in_size(per_class: int, sizes: dict[str, int]) -> str:
    """The quadrant whose training split (images per class) is nearest to ``per_class`` on a log scale;
    the larger one on an exact tie."""
    return min(sorted(sizes, key=lambda q: -sizes[q]), key=lambda q: abs(math.log(per_class / sizes[q])))


def point_spec(cfg: DictConfig, regime: str, quadrant: str, seed: int, steps: int, search, per_class: int) -> CellSpec:
    """A size-curve run: the comparison's run of ``regime`` on ``quadrant`` (at ``search``'s choice) on the
    first ``per_class`` training images of each class."""
    spec = seed_spec(cfg, regime, quadrant, seed, steps, search, stage="size_curve")
    label = ",".join(part for part in (spec.label, f"n={per_class}") if part)
    return dataclasses.replace(spec, train_per_class=per_class, label=label)


def run_size_curve(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    """The ``size_curve`` stage's work (``size_curve.run`` on); writes models/size_curve/ when every point is done."""
    where = ProjectPaths.of(cfg)
    runner = CellRunner(cfg, state_root, parent)
    steps = headline_budget(cfg)
    results = {r: RegimeResults.load(where.regime_results(r)) for r in cfg.regimes}
    found: dict[str, dict[str, list[SizePoint]]] = {}
    with parallel.Workers(runner, cfg.trainer.cell_processes) as workers:
        for quadrant in cfg.size_curve.quadrants:
            sizes_of = {q: full_per_class(runner.card(q), cfg.finetune.train_per_class) for q in same_target(quadrant)}
            full = sizes_of[quadrant]
            subsets = subset_sizes(list(cfg.size_curve.per_class), full)[:-1]
            plan: dict[tuple[str, int], tuple[str, SearchRecord | None]] = {}
            for regime in cfg.regimes:
                for n in subsets:
                    tuned_on = nearest_in_size(n, sizes_of)
                    plan[regime, n] = tuned_on, results[regime].at(steps, tuned_on).search
            specs = {
                (regime, n, seed): point_spec(cfg, regime, quadrant, seed, steps, search, n)
                for (regime, n), (_, search) in plan.items()
                for seed in cfg.seeds
            }
            trainable: list[parallel.Job] = [
                s for s in specs.values() if not s.recipe.cache_features and not runner.is_finished(s)
            ]
            progress_line(
                f"{quadrant}: {len(subsets)} subsets ({', '.join(map(str, subsets))} per class) x "
                f"{len(cfg.regimes)} regimes x {len(cfg.seeds)} seeds; {len(trainable)} trainable cells to run"
            )
            workers.run(trainable)
            classes = len(runner.card(quadrant).classes)
            found[quadrant] = {}
            for regime in cfg.regimes:
                points = []
                for n in subsets:
                    tuned_on, search = plan[regime, n]
                    records = {str(seed): runner.run(specs[regime, n, seed]).record for seed in cfg.seeds}
                    first = specs[regime, n, cfg.seeds[0]]
                    points.append(
                        SizePoint(
                            per_class=n,
                            n_train=n * classes,
                            tuned_on=tuned_on,
                            from_comparison=False,
                            seeds=records,  # val_correct kept: the call at each size is paired (size_verdicts)
                            lr=first.recipe.lr,
                            variant="" if search is None else search.variant,
                        )
                    )
                points.append(comparison_point(results[regime].at(steps, quadrant), quadrant, full, runner))
                found[quadrant][regime] = points
                progress_line(
                    f"{quadrant}/{regime}: validation accuracy by images per class: "
                    + ", ".join(f"{p.per_class}: {_mean_val(p):.3f}" for p in points)
                )
    if not runs.launched_as_global_zero():
        return
    with staged_dir(where.size_curve) as staging:
        SizeCurveResults(run=True, steps=steps, quadrants=found).save(staging / RESULTS)
        save_config(cfg, staging / CONFIG)
    fitting.clear(state_root)


def comparison_point(found: QuadrantSeeds, quadrant: str, full: int, runner: CellRunner) -> SizePoint:
    """The full split's point: the comparison's seeds of the regime on ``quadrant``, as models/finetune has them."""
    card = runner.card(quadrant)
    n_train = sum(min(count, full) for count in card.counts_per_class["train"].values())
    return SizePoint(
        per_class=full,
        n_train=n_train,
        tuned_on=quadrant,
        from_comparison=True,
        seeds=found.seeds,
        lr=found.lr,
        variant=found.variant,
    )


def _mean_val(point: SizePoint) -> float:
    values = [r.val_acc for r in point.seeds.values()]
    return sum(values) / len(values)
