"""Each regime's nuisance hyperparameters, tuned on validation data before regimes are compared.

The regime is the variable under study; its learning rate (and for finetune_all the recipe:
discriminative rates from the start, or the textbook's two phases) is a nuisance variable that
is optimised for each regime on each target before the comparison (Deep Learning Tuning
Playbook; Kornblith et al. 2019 tuned a grid per regime on validation data). The space is the
regime's ``search`` in conf/regime/<name>.yaml: a log grid of learning rates times named
variants (each a set of recipe overrides).

``successive_halving`` searches the grid with Optuna: a ``GridSampler`` (every point once, in
an order fixed by ``seed``) and its ``SuccessiveHalvingPruner`` (asynchronous successive
halving): every trial reports its validation accuracy after each epoch, and a trial that is
not among the best ``1 / reduction_factor`` of those that reached the same rung (epochs
``min_epochs``, ``min_epochs * reduction_factor``, ...) stops there. A frozen regime's trial
costs a fraction of a second on cached features, so frozen regimes search the whole grid at
the full budget (``prune=False``). The chosen point is the best complete trial by validation
accuracy (ties: the first in grid order); the test split is never read here.

Trials are cells of the stage (``training.runner``): a stopped stage resumes the search,
because a finished trial is read back from its state folder and its epochs are reported to
the pruner again, which then makes the same decisions in the same order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Point:
    """One configuration of a search: a learning rate and a named variant's overrides."""

    lr: float
    variant: str = ""
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return f"lr={self.lr:g}" + (f",{self.variant}" if self.variant else "")

    def recipe_overrides(self) -> dict[str, Any]:
        return {"lr": self.lr, **dict(self.overrides)}


def grid(lrs: list[float], variants: dict[str, dict[str, Any]] | None) -> list[Point]:
    """Every (learning rate, variant) pair, learning rates in ascending order."""
    named = variants or {"": {}}
    return [
        Point(lr, name, tuple(sorted(overrides.items()))) for name, overrides in named.items() for lr in sorted(lrs)
    ]


class Reporter:
    """What a trial's fit calls after each validation epoch: report to Optuna, ask whether to stop."""

    def __init__(self, trial: Any):
        self.trial = trial
        self.reported = 0  # epochs reported so far
        self.pruned_at: int | None = None

    def report(self, epoch: int, val_acc: float) -> bool:
        """Report epoch ``epoch``'s value (once); True when the trial should stop here."""
        if self.pruned_at is not None:
            return True
        if epoch <= self.reported:
            return False
        self.trial.report(val_acc, step=epoch)
        self.reported = epoch
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False

    def replay(self, values: list[float]) -> None:
        """Report every epoch not reported yet: a trial read back from its state folder, or the epochs a
        resumed fit ran before it was stopped. The pruner then decides as it did the first time."""
        for epoch, value in enumerate(values, start=1):
            if self.report(epoch, value):
                return


@dataclass
class TrialResult:
    point: Point
    values: list[float]  # validation accuracy after each epoch it trained
    best: float  # the best of them (the trial's result)
    pruned_at: int | None = None  # the epoch it was stopped at, or None: it ran its whole budget


@dataclass
class SearchResult:
    trials: list[TrialResult] = field(default_factory=list)

    @property
    def chosen(self) -> TrialResult:
        """The best complete trial (a pruned one never wins: it did not get the budget); ties: grid order."""
        complete = [t for t in self.trials if t.pruned_at is None]
        return max(complete, key=lambda t: t.best)

    def at_edge(self, lrs: list[float]) -> bool:
        """Whether the chosen learning rate is the smallest or largest of the grid: the best may lie outside."""
        return len(lrs) > 1 and self.chosen.point.lr in (min(lrs), max(lrs))


def rungs(epochs: int, min_epochs: int, reduction_factor: int) -> list[int]:
    """The epochs at which successive halving compares trials: min_epochs, x reduction_factor, ..., below ``epochs``."""
    found, at = [], min_epochs
    while at < epochs:
        found.append(at)
        at *= reduction_factor
    return found


def rung_words(result: TrialResult, rung_epochs: list[int]) -> str:
    """Where a pruned search left a trial, for progress lines: "stopped at rung 1 of 2 (epoch 3)"."""
    if not rung_epochs:
        return ""
    if result.pruned_at is None:
        return f", through all {len(rung_epochs)} rungs"
    reached = sum(at <= result.pruned_at for at in rung_epochs)
    return f", stopped at rung {reached} of {len(rung_epochs)} (epoch {result.pruned_at})"


# A trial: (point, reporter) -> its validation accuracy per epoch (stopped early when the reporter says so).
RunTrial = Callable[[Point, Reporter], list[float]]


def successive_halving(
    points: list[Point],
    run_trial: RunTrial,
    epochs: int,
    min_epochs: int,
    reduction_factor: int,
    seed: int,
    prune: bool = True,
    on_trial: Callable[[int, int, TrialResult], None] | None = None,
) -> SearchResult:
    """Search ``points`` (each at most ``epochs`` epochs) with Optuna's grid sampler and successive halving
    pruner; ``prune=False`` runs every point to the end (a plain grid search)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    order = list(range(len(points)))
    pruner: optuna.pruners.BasePruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=reduction_factor)
        if prune and min_epochs < epochs
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.GridSampler({"point": order}, seed=seed), pruner=pruner
    )
    found = SearchResult()

    def objective(trial: optuna.Trial) -> float:
        point = points[trial.suggest_categorical("point", order)]
        reporter = Reporter(trial)
        values = run_trial(point, reporter)
        reporter.replay(values)  # a trial read back from its state folder reported nothing yet
        pruned_at = reporter.pruned_at
        result = TrialResult(point, values, max(values) if values else -math.inf, pruned_at)
        found.trials.append(result)
        if on_trial is not None:
            on_trial(len(found.trials), len(points), result)
        if pruned_at is not None:
            raise optuna.TrialPruned()
        return result.best

    study.optimize(objective, n_trials=len(points), catch=())
    found.trials.sort(key=lambda t: points.index(t.point))
    return found
