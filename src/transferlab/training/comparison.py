"""The comparison's work: one regime on every quadrant at every budget, and truncate_freeze's cut sweep.

``run_regime`` is the body of the ``finetune@<regime>`` stage. For each budget in ``budgets`` and
each quadrant it

1. tunes the regime on validation data (``training.tuning``: its grid searched on ``tune.seed``);
2. trains it once per seed of ``seeds`` at the chosen point (``seed_spec``; the race stage adds
   seeds with the same function), each run tested on the quadrant's test split (reported, never
   used to choose);
3. counts its cost (``training.cost``) and keeps the best-validation seed's network of the
   headline budget: the one the registry gets if this regime is recommended there.

Trainable regimes run their quadrants' searches, then their seeds, side by side
(``training.parallel``); a frozen regime's cells take a fraction of a second on features cached
once per quadrant. ``run_cut_sweep`` trains truncate_freeze's head at every cut point of
``cut_sweep.cut_at`` on the quadrants of ``cut_sweep.quadrants``, at the headline budget and the
configured rate. Every cell goes through ``training.runner``.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from transferlab.core.artifacts import CellRecord, CutSeeds, CutSweepResults, QuadrantSeeds, RegimeResults, SearchRecord
from transferlab.core.config import save_config
from transferlab.core.files import csv_text, staged_dir, write_text
from transferlab.core.names import QUADRANTS
from transferlab.core.paths import CONFIG, HISTORY, MODEL, RESULTS, ProjectPaths
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training import parallel
from transferlab.training.cost import regime_cost
from transferlab.training.module import Classifier, save_model
from transferlab.training.runner import CellOutcome, CellRunner, CellSpec, build_module, headline_budget
from transferlab.training.tuning import SearchJob, point_label, point_overrides

HISTORY_COLUMNS = ["steps", "seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]


def history_csv(rows: list[dict]) -> str:
    """history.csv: one row per (budget, seed, epoch); floats to 6 significant digits, a missing value empty."""

    def shown(value) -> str:
        return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)

    return csv_text(HISTORY_COLUMNS, [[shown(row.get(c)) for c in HISTORY_COLUMNS] for row in rows])


def history_rows(outcomes: list[CellOutcome]) -> list[dict]:
    """Every epoch of every run, as history.csv rows."""
    return [
        {"steps": o.record.steps, "seed": o.record.seed, **row.model_dump()}
        for o in outcomes
        for row in o.result.history
    ]


def chosen_seed(records: dict[int, CellRecord]) -> int:
    """The seed whose network is kept: best validation accuracy, the lowest seed on a tie."""
    return max(sorted(records), key=lambda seed: records[seed].val_acc)


def seed_spec(
    cfg: DictConfig,
    regime: str,
    quadrant: str,
    seed: int,
    steps: int,
    search: SearchRecord | None,
    stage: str = "finetune",
) -> CellSpec:
    """A comparison run: ``regime`` on ``quadrant`` with ``seed`` at the chosen point (or as configured)."""
    lr, variant = (None, "") if search is None else (search.lr, search.variant)
    return CellSpec.for_regime(
        cfg,
        regime,
        quadrant,
        seed,
        steps,
        stage=stage,
        dvc_stage=f"finetune@{regime}" if stage == "finetune" else stage,
        label=point_label(lr, variant),
        **point_overrides(cfg, regime, lr, variant),
    )


def run_regime(cfg: DictConfig, regime_name: str, state_root: Path, parent: str | None) -> None:
    """The ``finetune@<regime>`` stage's work; writes models/finetune/<regime>/ when every cell is done."""
    runner = CellRunner(cfg, state_root, parent)
    budgets: dict[str, dict[str, QuadrantSeeds]] = {}
    networks: dict[str, Classifier] = {}
    histories: dict[str, list[dict]] = {q: [] for q in QUADRANTS}
    with parallel.Workers(runner, int(cfg.trainer.cell_processes)) as workers:
        for steps in cfg.budgets:
            budgets[str(steps)] = {}
            made = budget_seeds(cfg, runner, workers, [(regime_name, q) for q in QUADRANTS], steps)
            for quadrant in QUADRANTS:
                found, outcomes = made[regime_name, quadrant]
                budgets[str(steps)][quadrant] = found
                histories[quadrant] += history_rows(list(outcomes.values()))
                if steps == headline_budget(cfg):
                    networks[quadrant] = outcomes[found.chosen_seed].module
    if not runs.launched_as_global_zero():
        return
    where = ProjectPaths.of(cfg)
    with staged_dir(where.finetune(regime_name)) as staging:
        for quadrant, network in networks.items():
            (staging / quadrant).mkdir()
            save_model(network, staging / quadrant / MODEL)
            write_text(staging / quadrant / HISTORY, history_csv(histories[quadrant]))
        RegimeResults(regime=regime_name, budgets=budgets).save(staging / RESULTS)
        save_config(cfg, staging / CONFIG)
    fitting.clear(state_root)


def budget_seeds(
    cfg: DictConfig, runner: CellRunner, workers: parallel.Workers, pairs: list[tuple[str, str]], steps: int
) -> dict[tuple[str, str], tuple[QuadrantSeeds, dict[int, CellOutcome]]]:
    """Each (regime, quadrant) of ``pairs`` at ``steps``: its search, then its seeds at the chosen point
    (``quadrant_seeds``). Every search runs before any seed; trainable searches and cells run side by side on
    ``workers``, those on cached features (a fraction of a second each) in this process."""
    jobs = {(r, q): SearchJob(r, q, steps) for r, q in pairs}
    if cfg.tune.search != "off":
        searching: list[parallel.Job] = [
            j for j in jobs.values() if not cfg.regime[j.regime].cache_features and not j.run_is_kept(runner)
        ]
        workers.run(searching)
    searches = {pair: job.run(runner) for pair, job in jobs.items()}
    specs = {(r, q, s): seed_spec(cfg, r, q, s, steps, searches[r, q]) for r, q in pairs for s in cfg.seeds}
    training: list[parallel.Job] = [
        spec for spec in specs.values() if not spec.recipe.cache_features and not runner.is_finished(spec)
    ]
    workers.run(training)
    return {(r, q): quadrant_seeds(runner, {s: specs[r, q, s] for s in cfg.seeds}, searches[r, q]) for r, q in pairs}


def quadrant_seeds(
    runner: CellRunner, specs: dict[int, CellSpec], search: SearchRecord | None
) -> tuple[QuadrantSeeds, dict[int, CellOutcome]]:
    """One regime's seeds on one quadrant at one budget (``specs``: {seed: its run}, finished or run here):
    their records, the kept seed, its point and its counted cost."""
    outcomes = {seed: runner.run(spec) for seed, spec in specs.items()}
    records = {seed: outcome.record for seed, outcome in outcomes.items()}
    keep = chosen_seed(records)
    found = QuadrantSeeds(
        chosen_seed=keep,
        seeds={str(s): r for s, r in records.items()},
        lr=specs[keep].recipe.lr,
        variant="" if search is None else search.variant,
        search=search,
        cost=cost_of(runner, specs[keep], records[keep]),
    )
    return found, outcomes


def cost_of(runner: CellRunner, spec: CellSpec, record: CellRecord):
    """The counted cost of a comparison run (``training.cost``)."""
    card = runner.card(spec.dataset)
    module = build_module(runner.cfg, spec.recipe, len(card.classes), spec.budget.epochs)
    rows = record.n_train or 0  # a cached regime's training set is already the materialised N x (K + 1) rows
    n_val = sum(card.counts_per_class["val"].values())
    return regime_cost(
        module,
        runner.cfg.data.image_size,
        spec.recipe.cache_features,
        rows,
        n_val,
        spec.budget.steps or 0,
        spec.batch_size,
        spec.budget.epochs,
    )


def run_cut_sweep(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    """truncate_freeze's head at every cut of ``cut_sweep.cut_at``, every seed, on each quadrant of
    ``cut_sweep.quadrants``: the layer-transferability curve (Yosinski et al., 2014). Every cut's
    features (train, val and test) come from one forward pass of the pretrained backbone."""
    runner = CellRunner(cfg, state_root, parent)
    cuts = list(cfg.cut_sweep.cut_at)
    steps = headline_budget(cfg)
    found: dict[str, dict[str, CutSeeds]] = {}
    for quadrant in cfg.cut_sweep.quadrants:
        runner.cache_features(quadrant, cuts, cfg.finetune.train_per_class)
        found[quadrant] = {}
        for cut in cuts:
            seeds = {}
            for seed in cfg.seeds:
                spec = CellSpec.for_regime(cfg, "truncate_freeze", quadrant, seed, steps, stage="cut_sweep", cut_at=cut)
                record = runner.run(spec).record
                seeds[str(seed)] = record.model_copy(update={"val_correct": None})
            found[quadrant][cut] = CutSeeds(seeds=seeds)
    if not runs.launched_as_global_zero():
        return
    where = ProjectPaths.of(cfg)
    with staged_dir(where.cut_sweep) as staging:
        CutSweepResults(cut_at=cuts, quadrants=found).save(staging / RESULTS)
        save_config(cfg, staging / CONFIG)
    fitting.clear(state_root)
