"""A regime's search on one quadrant at one budget: its trials are cells, its choice is kept.

The search (``training.search``) runs on the seed ``tune.seed``, which is not one of the
comparison's ``seeds``: the comparison's runs are not the ones the choice was made on. Each
trial is a cell of the stage (``training.runner``, stage tag ``tune``, never tested), nested in
MLflow under one run per search (``tune/<quadrant>/<regime>``), which holds the chosen point as
params and every trial's best validation accuracy. ``tune.search: off`` chooses nothing: the
regime's rate as set in params.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.artifacts import SearchRecord, TrialRecord
from transferlab.core.console import progress_line
from transferlab.tracking import runs
from transferlab.training.runner import CellRunner, CellSpec
from transferlab.training.search import Point, Reporter, TrialResult, grid, rung_words, rungs, successive_halving


def search_points(cfg: DictConfig, regime: str) -> list[Point]:
    search = cfg.regime[regime].search
    return grid(list(search.lr), None if search.variants is None else dict(search.variants))


def point_overrides(cfg: DictConfig, regime: str, lr: float | None, variant: str) -> dict:
    """The recipe overrides of a chosen point (none when tuning is off: the regime as configured)."""
    if lr is None:
        return {}
    variants = cfg.regime[regime].search.variants or {}
    return {"lr": lr, **dict(variants.get(variant, {}) if variant else {})}


def point_label(lr: float | None, variant: str) -> str:
    return "" if lr is None else Point(lr, variant).label


@dataclass(frozen=True)
class SearchJob:
    """One search, picklable: a worker process of ``training.parallel`` runs it with its own runner."""

    regime: str
    quadrant: str
    steps: int

    def run(self, runner: CellRunner) -> SearchRecord | None:
        return tune(runner, self.regime, self.quadrant, self.steps)

    def run_is_kept(self, runner: CellRunner) -> bool:
        """Whether this search finished before (its record is in the stage's state folder)."""
        return record_path(runner, self).is_file()


def record_path(runner: CellRunner, job: SearchJob) -> Path:
    return runner.state_root / f"search-{job.quadrant}-{job.regime}-b{job.steps}.json"


def tune(runner: CellRunner, regime: str, quadrant: str, steps: int) -> SearchRecord | None:
    """Search ``regime``'s grid on ``quadrant`` with ``steps`` optimizer steps per trial (None: tuning is off).
    A search finished before is read back from the stage's state folder."""
    cfg = runner.cfg
    method = cfg.tune.search
    if method == "off":
        return None
    kept = record_path(runner, SearchJob(regime, quadrant, steps))
    if kept.is_file():
        return SearchRecord.model_validate_json(kept.read_text())
    points = search_points(cfg, regime)
    cached = bool(cfg.regime[regime].cache_features)
    search_run = _open_search_run(runner, regime, quadrant, steps, method, len(points))

    def run_trial(point: Point, reporter: Reporter) -> list[float]:
        spec = CellSpec.for_regime(
            cfg,
            regime,
            quadrant,
            int(cfg.tune.seed),
            steps,
            stage="tune",
            label=point.label,
            tested=False,
            **point.recipe_overrides(),
        )
        outcome = runner.run(spec, parent=search_run, reporter=reporter)
        return [row.val_acc for row in outcome.result.history if row.val_acc is not None]

    pruned = method == "successive_halving" and not cached
    rung_epochs = rungs(cfg.finetune.epochs, int(cfg.tune.min_epochs), int(cfg.tune.reduction_factor)) if pruned else []

    def on_trial(done: int, total: int, result: TrialResult) -> None:
        progress_line(
            f"{quadrant}/{regime} b{steps}: trial {done}/{total} of the search ({result.point.label}): "
            f"best val acc {result.best:.3f}{rung_words(result, rung_epochs)}"
        )

    found = successive_halving(
        points,
        run_trial,
        cfg.finetune.epochs,
        int(cfg.tune.min_epochs),
        int(cfg.tune.reduction_factor),
        seed=int(cfg.tune.seed),
        prune=pruned,
        on_trial=on_trial,
    )
    lrs = list(cfg.regime[regime].search.lr)
    chosen = found.chosen
    record = SearchRecord(
        method=method if not cached or method == "grid" else "grid (cached features: every point at the full budget)",
        seed=int(cfg.tune.seed),
        grid_lr=sorted(lrs),
        trials=[
            TrialRecord(
                lr=t.point.lr,
                variant=t.point.variant,
                val_by_epoch=[round(v, 6) for v in t.values],
                best=round(t.best, 6),
                pruned_at=t.pruned_at,
            )
            for t in found.trials
        ],
        lr=chosen.point.lr,
        variant=chosen.point.variant,
        at_edge=found.at_edge(lrs),
    )
    if search_run is not None:
        runs.log_params(
            search_run, {"chosen_lr": record.lr, "chosen_variant": record.variant or "-", "at_edge": record.at_edge}
        )
        runs.log_metrics(
            search_run,
            {
                "best/val_acc": chosen.best,
                "trials": len(found.trials),
                "pruned": sum(t.pruned_at is not None for t in found.trials),
            },
        )
        runs.finish_run(search_run)
    if runs.launched_as_global_zero():
        from transferlab.core.files import write_text

        write_text(kept, record.model_dump_json(indent=1))
    return record


def _open_search_run(
    runner: CellRunner, regime: str, quadrant: str, steps: int, method: str, points: int
) -> str | None:
    if not runs.launched_as_global_zero():
        return None
    cfg = runner.cfg
    tags = {
        "stage": "tune",
        "quadrant": quadrant,
        "regime": regime,
        "seed": str(cfg.tune.seed),
        "budget": str(steps),
        "dvc.stage": f"finetune@{regime}",
        **runs.data_tags(cfg, quadrant),
    }
    params = {
        "method": method,
        "points": points,
        "grid_lr": list(cfg.regime[regime].search.lr),
        "variants": ",".join(cfg.regime[regime].search.variants or {}) or "-",
        "steps": steps,
        "min_epochs": cfg.tune.min_epochs,
        "reduction_factor": cfg.tune.reduction_factor,
    }
    return runs.start_run(
        cfg.tracking.experiment_name, f"tune/{quadrant}/{regime}/b{steps}", tags, params, runner.parent, cfg.tune.seed
    )
