"""The one way a network is trained here: a ``CellSpec`` (what to train) and ``CellRunner.run`` (how).

Every training run of every stage is a cell: pretraining on the source, each (quadrant, regime,
seed) of the comparison, each cut point of the cut sweep, each job of the Hydra sweep. A spec
names the dataset, the regime and its overrides (``Recipe``: everything the LightningModule is
built from), the seed, the budget and the stage it belongs to. ``run`` then does, in this order
and in one place:

1. the run's tags, params and fingerprint (a hash of everything its result depends on);
2. skip: a cell this stage finished before it was stopped is read back, not trained again;
3. seed, build the module, load the pretrained backbone (``init: pretrained``);
4. frozen regimes: the frozen part's features, cached once per (dataset, cut) for all cells;
5. fit (``training.fit``: tracked in MLflow, resumable after a kill), test on the dataset's test
   split (reported, never used to choose), log the test metrics, keep the result.

The training sets are built before anything is seeded, and the module right after
``seed_everything(seed)``: the head's initialisation is a function of the seed alone.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import TensorDataset

from transferlab.core.artifacts import (
    AugmentMeta,
    CellRecord,
    CellResult,
    DatasetCard,
    EpochRow,
    PretrainMeta,
    TestMetrics,
)
from transferlab.core.config import as_dict, save_config
from transferlab.core.errors import ConfigError
from transferlab.core.paths import ProjectPaths
from transferlab.data.arrays import ImageArrayDataset, load_split
from transferlab.data.training_sets import training_sets
from transferlab.models import Backbone, build_backbone
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training.budget import code_version, file_sha256, steps_per_epoch
from transferlab.training.callbacks import ReportToSearch
from transferlab.training.evaluation import correct_predictions, evaluate
from transferlab.training.feature_cache import pooled_features
from transferlab.training.module import Classifier

PRETRAIN = "pretrain"  # the regime name of a pretraining cell


@dataclass(frozen=True)
class Recipe:
    """What a cell's LightningModule is built from: a regime's settings (conf/regime + params.yaml),
    with a spec's overrides applied."""

    init: str  # pretrained | random
    lr: float
    weight_decay: float
    cut_at: str | None = None
    freeze_backbone: bool = False
    backbone_lr_factor: float = 1.0
    head_dropout: float = 0.0
    head_hidden: int | None = None
    cache_features: bool = False
    head_epochs: int = 0
    plateau_patience: int | None = None
    unfreeze_top: int | None = None

    @classmethod
    def for_regime(cls, cfg: DictConfig, regime: str, **overrides: Any) -> Recipe:
        settings = {f.name: cfg.regime[regime][f.name] for f in dataclasses.fields(cls) if f.name != "weight_decay"}
        return cls(**{**settings, "weight_decay": cfg.finetune.weight_decay, **overrides})

    @classmethod
    def for_pretraining(cls, cfg: DictConfig) -> Recipe:
        return cls(init="random", lr=cfg.pretrain.lr, weight_decay=cfg.pretrain.weight_decay)


@dataclass(frozen=True)
class Budget:
    """``epochs`` validation points; ``steps`` optimizer steps in all (None: an epoch is one pass over the
    data), split evenly over the epochs (``training.budget``)."""

    epochs: int
    steps: int | None = None

    @property
    def steps_per_epoch(self) -> int | None:
        return None if self.steps is None else steps_per_epoch(self.steps, self.epochs)

    @classmethod
    def of_finetuning(cls, cfg: DictConfig, steps: int) -> Budget:
        return cls(epochs=cfg.finetune.epochs, steps=steps)


def headline_budget(cfg: DictConfig) -> int:
    """The budget whose verdict is the headline (its recommended regime is registered): the last."""
    return int(cfg.budgets[-1])


@dataclass(frozen=True)
class CellSpec:
    """One training run: what it trains on, how, for how long, and which stage it belongs to."""

    stage: str  # the run's `stage` tag: pretrain | finetune | tune | race | cut_sweep | size_curve | sweep
    dvc_stage: str  # the DVC stage it runs in (tag dvc.stage), e.g. finetune@scratch
    dataset: str  # source or a quadrant
    regime: str  # a regime of conf/regime/, or "pretrain"
    seed: int
    recipe: Recipe
    budget: Budget
    batch_size: int
    train_per_class: int | None = None  # None: every training image
    label: str = ""  # what sets it apart from its regime's other runs (names the run), e.g. lr=0.003
    tested: bool = True  # False: a search's trial, never tested (the test split is only reported, for results)
    extra_params: tuple[tuple[str, Any], ...] = ()  # more params to log (e.g. pretrain.source)

    @classmethod
    def for_regime(
        cls,
        cfg: DictConfig,
        regime: str,
        dataset: str,
        seed: int,
        steps: int,
        stage: str = "finetune",
        dvc_stage: str | None = None,
        label: str | None = None,
        tested: bool = True,
        **overrides: Any,
    ) -> CellSpec:
        return cls(
            stage=stage,
            dvc_stage=dvc_stage or (f"finetune@{regime}" if stage in ("finetune", "tune") else stage),
            dataset=dataset,
            regime=regime,
            seed=seed,
            recipe=Recipe.for_regime(cfg, regime, **overrides),
            budget=Budget.of_finetuning(cfg, steps),
            batch_size=cfg.finetune.batch_size,
            train_per_class=cfg.finetune.train_per_class,
            label=label if label is not None else ",".join(f"{k}={v}" for k, v in sorted(overrides.items())),
            tested=tested,
        )

    @classmethod
    def for_pretraining(cls, cfg: DictConfig, seed: int) -> CellSpec:
        return cls(
            stage=PRETRAIN,
            dvc_stage=PRETRAIN,
            dataset="source",
            regime=PRETRAIN,
            seed=seed,
            recipe=Recipe.for_pretraining(cfg),
            budget=Budget(epochs=cfg.pretrain.epochs),
            batch_size=cfg.pretrain.batch_size,
            extra_params=(("source", cfg.pretrain.source),),
        )

    def _parts(self) -> list[str]:
        steps = f"b{self.budget.steps}" if self.budget.steps is not None else ""
        return [p for p in (self.dataset, self.regime, self.label, steps, f"s{self.seed}") if p]

    @property
    def name(self) -> str:
        """Unique within the stage: its state folder, e.g. small_similar-finetune_all-lr=0.003-b150-s0."""
        return PRETRAIN if self.regime == PRETRAIN else "-".join(self._parts())

    @property
    def run_name(self) -> str:
        if self.regime == PRETRAIN:
            return PRETRAIN
        prefix = "" if self.stage in ("finetune", "sweep") else f"{self.stage}/"
        return prefix + "/".join(self._parts())

    def run(self, runner: CellRunner) -> CellOutcome:
        """As a job of ``training.parallel``."""
        return runner.run(self)

    def tags(self) -> dict[str, str]:
        tags = {
            "stage": self.stage,
            "quadrant": self.dataset,
            "regime": self.regime,
            "seed": str(self.seed),
            "dvc.stage": self.dvc_stage,
        }
        if self.recipe.cut_at is not None:
            tags["cut_at"] = self.recipe.cut_at
        if self.budget.steps is not None:
            tags["budget"] = str(self.budget.steps)
        if self.train_per_class is not None:
            tags["train_per_class"] = str(self.train_per_class)
        return tags


@dataclass
class CellOutcome:
    result: CellResult
    module: Classifier  # the best-validation network
    run_id: str | None = None  # its MLflow run; None on DDP ranks other than 0

    @property
    def record(self) -> CellRecord:
        return self.result.record


def build_module(cfg: DictConfig, recipe: Recipe, num_classes: int, epochs: int) -> Classifier:
    """The LightningModule of a recipe (random weights; ``CellRunner`` loads the pretrained ones)."""
    try:
        return Classifier(
            as_dict(cfg.model),
            num_classes,
            cfg.data.image_size,
            lr=recipe.lr,
            weight_decay=recipe.weight_decay,
            epochs=epochs,
            cut_at=recipe.cut_at,
            freeze_backbone=recipe.freeze_backbone,
            backbone_lr_factor=recipe.backbone_lr_factor,
            head_dropout=recipe.head_dropout,
            head_hidden=recipe.head_hidden,
            head_epochs=recipe.head_epochs,
            plateau_patience=recipe.plateau_patience,
            unfreeze_top=recipe.unfreeze_top,
        )
    except ValueError as err:  # e.g. an image size the model cannot take
        raise ConfigError(f"model={cfg.model.name}: {err}") from None


def pretrained_state(cfg: DictConfig) -> dict[str, torch.Tensor]:
    """The pretrained backbone weights (models/pretrain/backbone.pt), checked against the configured model."""
    where = ProjectPaths.of(cfg)
    meta = PretrainMeta.load(where.pretrain_meta)
    if meta.model != as_dict(cfg.model):
        raise ConfigError(
            f"pretrained weights {where.backbone} belong to model {meta.model.get('name')} with other "
            f"settings than model={cfg.model.name} asks for: re-run `dvc repro pretrain`"
        )
    if not where.backbone.is_file():
        raise ConfigError(f"{where.backbone} not found: run `dvc repro pretrain` first")
    try:
        return torch.load(where.backbone, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file fails in many ways (EOFError, RuntimeError, IndexError, ...)
        raise ConfigError(
            f"{where.backbone} cannot be loaded ({str(err).splitlines()[0][:100]}): the file is "
            f"truncated or corrupt; re-run `dvc repro -f pretrain`"
        ) from None


@lru_cache(maxsize=8)
def _file_digest(path: Path) -> str:
    return file_sha256(path)


class CellRunner:
    """Runs the cells of one stage into ``state_root`` (resumable state), nested under MLflow run ``parent``.

    What cells of a stage share is loaded once: the pretrained weights, each dataset's card and test
    split, and the frozen features of each (dataset, cut, training subset)."""

    def __init__(self, cfg: DictConfig, state_root: Path, parent: str | None):
        self.cfg, self.state_root, self.parent = cfg, state_root, parent
        self.paths = ProjectPaths.of(cfg)
        self.config_file = state_root / "config.yaml"
        save_config(cfg, self.config_file)
        self._weights: dict[str, torch.Tensor] | None = None
        self._backbone: Backbone | None = None
        self._features: dict[tuple[str, int | None, str], tuple[TensorDataset, ...]] = {}

    # -- what cells share ---------------------------------------------------------------------
    def pretrained_weights(self) -> dict[str, torch.Tensor]:
        if self._weights is None:
            self._weights = pretrained_state(self.cfg)
        return self._weights

    def card(self, dataset: str) -> DatasetCard:
        return DatasetCard.load(self.paths.card(dataset))

    def test_split(self, dataset: str) -> tuple[Any, Any]:
        return load_split(self.paths.raw_dataset(dataset), "test")

    def cache_features(self, dataset: str, cuts: list[str], train_per_class: int | None = None) -> None:
        """The frozen pretrained stages' pooled outputs at every cut in ``cuts``, of the training rows
        (the materialised augmented copies), validation and test images, from one forward pass."""
        wanted = [c for c in cuts if (dataset, train_per_class, c) not in self._features]
        if not wanted:
            return
        if self._backbone is None:
            self._backbone = build_backbone(as_dict(self.cfg.model), self.cfg.data.image_size)
            self._backbone.load_state_dict(self.pretrained_weights())
        names = self._backbone.stage_names
        deepest = max(wanted, key=names.index)
        backbone = self._backbone.truncated(deepest)
        train_set, val_set = training_sets(self.cfg, dataset, materialised=True, train_per_class=train_per_class)
        per_split = []
        for split in (train_set, val_set, ImageArrayDataset(*self.test_split(dataset))):
            features, labels = pooled_features(backbone, split, wanted, self.cfg.trainer.channels_last)
            per_split.append({cut: TensorDataset(features[cut], labels) for cut in wanted})
        for cut in wanted:
            self._features[dataset, train_per_class, cut] = tuple(split[cut] for split in per_split)

    def cached(self, spec: CellSpec) -> tuple[TensorDataset, ...]:
        cut = spec.recipe.cut_at or self._stage_names()[-1]
        self.cache_features(spec.dataset, [cut], spec.train_per_class)
        return self._features[spec.dataset, spec.train_per_class, cut]

    def _stage_names(self) -> list[str]:
        if self._backbone is not None:
            return self._backbone.stage_names
        return build_backbone(as_dict(self.cfg.model), self.cfg.data.image_size).stage_names

    # -- one cell -----------------------------------------------------------------------------
    def params(self, spec: CellSpec, n_train: int, n_val: int) -> dict[str, Any]:
        """The run's own knobs, each once, under flat names (searching 'lr' finds one param)."""
        cfg, card = self.cfg, self.card(spec.dataset)
        meta = AugmentMeta.load(self.paths.augment_meta(spec.dataset))
        params: dict[str, Any] = {
            "experiment": cfg.experiment.name,
            "dataset": card.dataset,
            "n_train": n_train,
            "n_val": n_val,
            "augment": meta.pipeline,
            "augment_copies": meta.copies,
            "model": cfg.model.name,
            **{f"model_{k}": v for k, v in cfg.model.items() if k not in ("name", "_target_")},
            "trainer": cfg.trainer.name,
            "accelerator": cfg.trainer.accelerator,
            "devices": cfg.trainer.devices,
            "precision": cfg.trainer.precision,
            "strategy": cfg.trainer.strategy,
            "epochs": spec.budget.epochs,
            "steps_per_epoch": spec.budget.steps_per_epoch,
            "steps": spec.budget.steps,
            "batch_size": spec.batch_size,
            "train_per_class": spec.train_per_class,
            **dataclasses.asdict(spec.recipe),
            **dict(spec.extra_params),
        }
        return {
            k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in params.items() if v is not None
        }

    def cell(self, spec: CellSpec, n_train: int, n_val: int) -> fitting.Cell:
        where = self.paths
        params = self.params(spec, n_train, n_val)
        tags = {**spec.tags(), **runs.data_tags(self.cfg, spec.dataset)}
        fingerprint = {
            "spec": dataclasses.asdict(spec),
            "params": params,
            "data": self.card(spec.dataset).sha256,
            "augmented": _file_digest(where.augmented_dataset(spec.dataset) / "x_train.npy"),
            "pretrained": _file_digest(where.backbone) if spec.recipe.init == "pretrained" else None,
            "code": code_version(),
            "model": as_dict(self.cfg.model),
            "trainer": as_dict(self.cfg.trainer),
        }
        return fitting.Cell(
            name=spec.name,
            run_name=spec.run_name,
            seed=spec.seed,
            epochs=spec.budget.epochs,
            steps_per_epoch=spec.budget.steps_per_epoch,
            batch_size=spec.batch_size,
            tags=tags,
            params=params,
            fingerprint_of=fingerprint,
            artifacts={"": self.config_file},
            resumable=not spec.recipe.cache_features,
        )

    def _sets(self, spec: CellSpec):
        return training_sets(
            self.cfg,
            spec.dataset,
            materialised=spec.recipe.cache_features,
            seed=spec.seed,
            train_per_class=spec.train_per_class,
        )

    def is_finished(self, spec: CellSpec) -> bool:
        train_set, val_set = self._sets(spec)
        return fitting.finished(self.state_root, self.cell(spec, len(train_set), len(val_set))) is not None

    def run(self, spec: CellSpec, parent: str | None = None, reporter: Any = None) -> CellOutcome:
        """Train, test, log and keep one cell; a cell finished before is read back. ``parent``: the MLflow run
        to nest under (default: the runner's); ``reporter``: a search's trial (``training.search.Reporter``),
        told each epoch's validation accuracy, which stops the fit when the search prunes it."""
        train_set, val_set = self._sets(spec)
        cell = self.cell(spec, len(train_set), len(val_set))
        done = fitting.finished(self.state_root, cell)
        if done is not None:
            kept, module, run_id = done
            return CellOutcome(CellResult.model_validate(kept), module, run_id)
        classes = self.card(spec.dataset).classes
        fitting.seed_everything(spec.seed)  # the head's initialisation follows from the seed
        module = build_module(self.cfg, spec.recipe, len(classes), spec.budget.epochs)
        if spec.recipe.init == "pretrained":
            module.load_backbone(self.pretrained_weights())
        if spec.recipe.cache_features:
            train_data, val_data, test_data = self.cached(spec)
            module.automatic_optimization = False  # steps a whole cached epoch per loader item
        else:
            train_data, val_data, test_data = train_set, val_set, self.test_split(spec.dataset)
        started = time.perf_counter()
        fitted = fitting.fit(
            self.cfg,
            cell,
            module,
            train_data,
            val_data,
            self.state_root,
            parent or self.parent,
            single_device=spec.recipe.cache_features,
            callbacks=[] if reporter is None else [ReportToSearch(reporter)],
        )
        seconds = time.perf_counter() - started
        correct = correct_predictions(fitted.module, val_data, self.cfg.evaluate.batch_size)
        test_metrics = evaluate(fitted.module, test_data, self.cfg.evaluate.batch_size)[0] if spec.tested else None
        history = [EpochRow.model_validate(row) for row in fitted.history]
        pruned_at = len(history) if len(history) < spec.budget.epochs else None
        record = CellRecord(
            seed=spec.seed,
            val_acc=round(fitted.val_acc, 6),
            best_epoch=fitted.best_epoch,
            epochs=spec.budget.epochs,
            test=None if test_metrics is None else TestMetrics(**test_metrics),
            steps=spec.budget.steps,
            n_train=len(train_set),
            val_correct="".join("1" if c else "0" for c in correct),
            pruned_at=pruned_at,
            val_by_epoch=[round(row.val_acc, 6) for row in history if row.val_acc is not None],
        )
        result = CellResult(record=record, history=history)
        if fitted.run_id is not None:
            metrics = {"best/val_acc": fitted.val_acc, "train_seconds": round(seconds, 2)}
            metrics.update({f"test/{k}": v for k, v in (test_metrics or {}).items()})
            runs.log_metrics(fitted.run_id, metrics)
            if pruned_at is not None:
                runs.set_tags(fitted.run_id, {"pruned_at_epoch": str(pruned_at)})
        fitting.keep_finished(self.state_root, cell, result.as_json(), fitted.module, fitted.run_id)
        shown = "" if test_metrics is None else f", test acc {test_metrics['acc']:.3f}"
        stopped = "" if pruned_at is None else f", pruned after epoch {pruned_at}"
        print(
            f"{cell.name}: val acc {fitted.val_acc:.3f} (epoch {fitted.best_epoch}/{cell.epochs}){shown}{stopped} "
            f"[{seconds:.1f} s]",
            flush=True,
        )
        return CellOutcome(result, fitted.module, fitted.run_id)


__all__ = [
    "Budget",
    "CellOutcome",
    "CellRunner",
    "CellSpec",
    "Recipe",
    "build_module",
    "pretrained_state",
]
