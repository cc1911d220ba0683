"""The race: more seeds where the call is close, for the contending regimes only.

After every regime's stage, the call of each budget and quadrant is made (``analysis.verdict``). While it
is a tie and a tied regime has fewer than ``compare.max_seeds`` seeds, each tied regime gets its next seed
(the smallest not run yet, never ``tune.seed``) at the point its search chose, and the call is made
again: seeds go where they can change the answer, not everywhere. Each look is made at the call's level
(``compare.level`` split over the possible looks), so that stopping at the first clear look does not
make a false "clear" likelier than ``1 - compare.level``.

Output: models/race/results.json (``RaceResults``: the seeds added and the contenders at each look) and,
for the headline budget, the network of each raced regime's best added seed
(models/race/<regime>/<quadrant>/model.pt), which ``evaluate`` registers when that seed is the best.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from transferlab.analysis.verdict import call_level, comparison, contenders
from transferlab.core.artifacts import CellRecord, QuadrantSeeds, RaceResults, RegimeResults, Verdict
from transferlab.core.config import save_config
from transferlab.core.console import progress_line
from transferlab.core.files import staged_dir
from transferlab.core.names import QUADRANTS
from transferlab.core.paths import CONFIG, MODEL, RESULTS, ProjectPaths
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training import parallel
from transferlab.training.comparison import seed_spec
from transferlab.training.module import Classifier, save_model
from transferlab.training.runner import CellRunner, headline_budget


def next_seed(have: set[int], tune_seed: int) -> int:
    seed = 0
    while seed in have or seed == tune_seed:
        seed += 1
    return seed


def race(
    seeds_of: dict[str, set[int]],
    call: Callable[[dict[str, dict[str, CellRecord]]], Verdict],
    train: Callable[[list[tuple[str, int]]], list[CellRecord]],
    max_seeds: int,
    tune_seed: int,
    on_look: Callable[[int, Verdict, list[tuple[str, int]]], None] | None = None,
) -> tuple[dict[str, dict[str, CellRecord]], list[str]]:
    """Add seeds to the tied regimes until the call is clear or every tied regime has ``max_seeds``.

    ``seeds_of``: the seeds each regime ran already; ``call(extra)``: the verdict with the seeds added so far;
    ``train([(regime, seed), ...])``: their records. Returns the records added and the tied set at each look."""
    extra: dict[str, dict[str, CellRecord]] = {}
    looks: list[str] = []
    while True:
        verdict = call(extra)
        todo = []
        for regime in contenders(verdict):
            have = seeds_of[regime] | {int(s) for s in extra.get(regime, {})}
            if len(have) < max_seeds:
                todo.append((regime, next_seed(have, tune_seed)))
        if not todo:
            return extra, looks
        looks.append("+".join(verdict.tied))
        if on_look is not None:
            on_look(len(looks), verdict, todo)
        for (regime, seed), record in zip(todo, train(todo)):
            extra.setdefault(regime, {})[str(seed)] = record


def run_race(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    where = ProjectPaths.of(cfg)
    results = {r: RegimeResults.load(where.regime_results(r)) for r in cfg.regimes}
    finetuned = {r: found.budgets for r, found in results.items()}
    runner = CellRunner(cfg, state_root, parent)
    level = float(cfg.compare.level)
    at = call_level(level, len(cfg.seeds), int(cfg.compare.max_seeds))
    added: dict[str, dict[str, dict[str, dict[str, CellRecord]]]] = {}
    looks: dict[str, dict[str, list[str]]] = {}
    networks: dict[tuple[str, str], tuple[float, Classifier]] = {}
    workers = parallel.Workers(runner, int(cfg.trainer.cell_processes))
    with workers:
        for steps in cfg.budgets:
            _race_budget(cfg, steps, runner, workers, finetuned, level, at, added, looks, networks)
    if not runs.launched_as_global_zero():
        return
    with staged_dir(where.race) as staging:
        for (regime, quadrant), (_, network) in networks.items():
            (staging / regime / quadrant).mkdir(parents=True)
            save_model(network, staging / regime / quadrant / MODEL)
        RaceResults(budgets=added, looks=looks).save(staging / RESULTS)
        save_config(cfg, staging / CONFIG)
    fitting.clear(state_root)


def _race_budget(
    cfg: DictConfig,
    steps: int,
    runner: CellRunner,
    workers: parallel.Workers,
    finetuned: dict,
    level: float,
    at: float,
    added: dict,
    looks: dict,
    networks: dict,
) -> None:
    """The race on every quadrant at one budget; fills ``added``, ``looks`` and ``networks``."""
    key = str(steps)
    added[key], looks[key] = {}, {}
    for quadrant in QUADRANTS:
        extra, looks[key][quadrant] = race_quadrant(
            cfg, steps, quadrant, runner, workers, finetuned, level, at, networks
        )
        if extra:
            added[key][quadrant] = extra


def race_quadrant(
    cfg: DictConfig,
    steps: int,
    quadrant: str,
    runner: CellRunner,
    workers: parallel.Workers,
    finetuned: dict[str, dict[str, dict[str, QuadrantSeeds]]],
    level: float,
    at: float,
    networks: dict,
) -> tuple[dict[str, dict[str, CellRecord]], list[str]]:
    """The race on one quadrant at one budget (``finetuned``: {regime: {steps: {quadrant: its seeds}}}): the
    records it added and the tied set at each look; at the headline budget, each raced regime's best added
    network goes to ``networks``."""

    def call(extra: dict[str, dict[str, CellRecord]]) -> Verdict:
        made = comparison(finetuned, {str(steps): {quadrant: extra}}, [quadrant], [steps], level, at)
        return made.budgets[str(steps)][quadrant].verdict

    def train(todo: list[tuple[str, int]]) -> list[CellRecord]:
        specs = [
            seed_spec(cfg, r, quadrant, s, steps, finetuned[r][str(steps)][quadrant].search, stage="race")
            for r, s in todo
        ]
        trainable: list[parallel.Job] = [s for s in specs if not s.recipe.cache_features and not runner.is_finished(s)]
        workers.run(trainable)
        records = []
        for (regime, _), spec in zip(todo, specs):
            outcome = runner.run(spec)
            records.append(outcome.record)
            best = networks.get((regime, quadrant))
            if steps == headline_budget(cfg) and (best is None or outcome.record.val_acc > best[0]):
                networks[regime, quadrant] = (outcome.record.val_acc, outcome.module)
        return records

    def on_look(look: int, verdict: Verdict, todo: list[tuple[str, int]]) -> None:
        progress_line(
            f"race {quadrant} b{steps}, look {look}: {verdict.reason}; adding seed "
            f"{', '.join(f'{s} to {r}' for r, s in todo)}"
        )

    seeds_of = {r: {int(s) for s in finetuned[r][str(steps)][quadrant].seeds} for r in finetuned}
    return race(seeds_of, call, train, int(cfg.compare.max_seeds), int(cfg.tune.seed), on_look)
