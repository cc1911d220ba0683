"""The comparison's work: every seed of one regime on every quadrant, and truncate_freeze's cut sweep.

``run_regime`` is the body of the ``finetune@<regime>`` stage: for each quadrant it trains the
regime once per seed (``seeds``) with the same budget as every other regime
(``training.budget``), tests each run on the quadrant's test split (reported, never used to
choose), and keeps the network of the seed with the best validation accuracy: the one the
registry gets if this regime wins the quadrant. ``run_cut_sweep`` trains truncate_freeze's
head at every cut point in ``cut_sweep.cut_at`` for the quadrants in ``cut_sweep.quadrants``.

Frozen regimes train their head on features cached once per quadrant (``feature_cache``):
the pretrained backbone's output does not depend on the seed. The cut sweep caches every
cut's features from one forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import TensorDataset

from transferlab.core.config import paths, save_config
from transferlab.core.errors import ConfigError
from transferlab.core.files import staged_dir, write_json, write_text
from transferlab.core.names import QUADRANTS
from transferlab.data.arrays import ImageArrayDataset, load_card, load_meta, load_split
from transferlab.data.training_sets import training_sets
from transferlab.models import build_backbone
from transferlab.tracking import runs
from transferlab.training import fit as fitting
from transferlab.training import parallel
from transferlab.training.budget import code_version, file_sha256, steps_per_epoch
from transferlab.training.evaluation import evaluate
from transferlab.training.feature_cache import pooled_features
from transferlab.training.module import Classifier, save_model

BACKBONE_FILE = "backbone.pt"  # in models/pretrain/
RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"


# --------------------------------------------------------------------------- shared


def pretrained_state(cfg: DictConfig) -> dict[str, torch.Tensor]:
    """The pretrained backbone weights, checked against the configured model."""
    folder = paths(cfg)["models"] / "pretrain"
    weights = folder / BACKBONE_FILE
    meta = load_meta(folder)
    if meta.get("model") != OmegaConf.to_container(cfg.model):
        raise ConfigError(f"pretrained weights {weights} belong to model {meta.get('model', {}).get('name')} with "
                          f"other settings than model={cfg.model.name} asks for: re-run `dvc repro pretrain`")
    if not weights.is_file():
        raise ConfigError(f"{weights} not found: run `dvc repro pretrain` first")
    try:
        return torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated file fails in many ways (EOFError, RuntimeError, IndexError, ...)
        raise ConfigError(f"{weights} cannot be loaded ({str(err).splitlines()[0][:100]}): the file is truncated "
                          f"or corrupt; re-run `dvc repro -f pretrain`") from None


def build_module(cfg: DictConfig, regime: DictConfig, num_classes: int, epochs: int,
                 cut_at: str | None = None, lr: float | None = None) -> Classifier:
    try:
        return Classifier(OmegaConf.to_container(cfg.model), num_classes, cfg.data.image_size,
                          lr=lr if lr is not None else regime.lr, weight_decay=cfg.finetune.weight_decay,
                          epochs=epochs, cut_at=cut_at if cut_at is not None else regime.cut_at,
                          freeze_backbone=regime.freeze_backbone, backbone_lr_factor=regime.backbone_lr_factor,
                          head_dropout=regime.head_dropout, head_hidden=regime.head_hidden,
                          head_epochs=regime.head_epochs, plateau_patience=regime.plateau_patience,
                          unfreeze_top=regime.unfreeze_top)
    except ValueError as err:  # e.g. an unknown cut_at, with the allowed stage names
        raise ConfigError(f"regime {regime.name}: {err}") from None


def new_module(cfg, regime, num_classes, epochs, seed, state, cut_at=None) -> Classifier:
    """A seeded module (the head's initialisation is reproducible) with the pretrained backbone loaded."""
    fitting.seed_everything(seed)
    module = build_module(cfg, regime, num_classes, epochs, cut_at)
    if regime.init == "pretrained":
        module.load_backbone(state)
    return module


def run_params(cfg: DictConfig, regime: DictConfig | None, quadrant: str, epochs: int, per_epoch: int | None,
               n_train: int, n_val: int, extra: dict | None = None) -> dict[str, Any]:
    """The run's own knobs, each once, under flat names (searching 'lr' finds one param)."""
    card = load_card(paths(cfg)["raw"] / quadrant)
    meta = load_meta(paths(cfg)["augmented"] / quadrant)
    params: dict[str, Any] = {
        "experiment": cfg.experiment.name, "dataset": card["source"].get("dataset"), "n_train": n_train,
        "n_val": n_val, "augment": meta.get("pipeline"), "augment_copies": meta.get("copies"),
        "model": cfg.model.name, **{f"model_{k}": v for k, v in cfg.model.items() if k not in ("name", "_target_")},
        "trainer": cfg.trainer.name, "accelerator": cfg.trainer.accelerator, "devices": cfg.trainer.devices,
        "precision": cfg.trainer.precision, "strategy": cfg.trainer.strategy,
        "epochs": epochs, "steps_per_epoch": per_epoch,
    }
    if regime is not None:
        params.update({"lr": regime.lr, "weight_decay": cfg.finetune.weight_decay,
                       "batch_size": cfg.finetune.batch_size, "steps": cfg.finetune.steps,
                       "train_per_class": cfg.finetune.train_per_class,
                       **{k: regime[k] for k in ("init", "cut_at", "freeze_backbone", "backbone_lr_factor",
                                                 "head_dropout", "head_hidden", "cache_features", "head_epochs",
                                                 "plateau_patience", "unfreeze_top")}})
    params.update(extra or {})
    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in params.items()
            if v is not None}


def _fingerprint(cfg: DictConfig, quadrant: str, params: dict, tags: dict) -> dict:
    where = paths(cfg)
    return {"params": params, "tags": {k: tags[k] for k in ("stage", "quadrant", "regime", "seed") if k in tags},
            "data": load_card(where["raw"] / quadrant)["sha256"], "augmented": load_meta(where["augmented"] / quadrant),
            "pretrained": file_sha256(where["models"] / "pretrain" / BACKBONE_FILE), "code": code_version(),
            "model": OmegaConf.to_container(cfg.model), "trainer": OmegaConf.to_container(cfg.trainer)}


def history_csv(rows: list[dict]) -> str:
    columns = ["seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    lines = [",".join(columns)]
    for row in rows:
        lines.append(",".join("" if row.get(c) is None else f"{row[c]:.6g}" if isinstance(row[c], float)
                              else str(row[c]) for c in columns))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- one regime


class RegimeCells:
    """Every (quadrant, seed) of one regime, tracked and resumable."""

    def __init__(self, cfg: DictConfig, regime_name: str, state_root: Path, parent: str | None,
                 stage: str = "finetune"):
        self.cfg, self.regime, self.state_root, self.parent = cfg, cfg.regime[regime_name], state_root, parent
        self.stage_tag = stage
        self.stage = f"finetune@{regime_name}" if stage == "finetune" else stage
        self.config_file = state_root / "config.yaml"
        save_config(cfg, self.config_file)

    def cell(self, quadrant: str, seed: int, n_train: int, n_val: int) -> fitting.Cell:
        cfg, regime = self.cfg, self.regime
        epochs, per_epoch = cfg.finetune.epochs, steps_per_epoch(cfg.finetune.steps, cfg.finetune.epochs)
        params = run_params(cfg, regime, quadrant, epochs, per_epoch, n_train, n_val)
        tags = {"stage": self.stage_tag, "quadrant": quadrant, "regime": regime.name, "seed": str(seed),
                "dvc.stage": self.stage, **runs.data_tags(cfg, quadrant)}
        name = f"{quadrant}-{regime.name}-s{seed}"
        return fitting.Cell(name=name, run_name=f"{quadrant}/{regime.name}/s{seed}", seed=seed, epochs=epochs,
                            steps_per_epoch=per_epoch, batch_size=cfg.finetune.batch_size, tags=tags, params=params,
                            fingerprint_of=_fingerprint(cfg, quadrant, params, tags),
                            artifacts={"": self.config_file}, resumable=not regime.cache_features)

    def starting_weights(self) -> dict[str, torch.Tensor] | None:
        """The pretrained backbone's weights when the regime starts from them, else None."""
        return pretrained_state(self.cfg) if self.regime.init == "pretrained" else None

    def quadrant(self, quadrant: str, state: dict | None) -> tuple[dict, dict[int, Classifier]]:
        """Train every seed on ``quadrant``: ({seed: result}, {seed: best-val network})."""
        results, networks, cache = {}, {}, None
        for seed in self.cfg.seeds:
            results[seed], networks[seed], cache = self.train(quadrant, seed, state, cache)
        return results, networks

    def _cell_and_sets(self, quadrant: str, seed: int):
        train_set, val_set = training_sets(self.cfg, quadrant, materialised=self.regime.cache_features, seed=seed,
                                           train_per_class=self.cfg.finetune.train_per_class)
        return self.cell(quadrant, seed, len(train_set), len(val_set)), train_set, val_set

    def is_finished(self, quadrant: str, seed: int) -> bool:
        return fitting.finished(self.state_root, self._cell_and_sets(quadrant, seed)[0]) is not None

    def train(self, quadrant: str, seed: int, state: dict | None, cache: tuple | None = None):
        """One cell: (result, best-val network, the quadrant's cached features or None), kept in the
        cell's state folder; a cell finished before is read back, not trained again."""
        cfg, regime = self.cfg, self.regime
        cell, train_set, val_set = self._cell_and_sets(quadrant, seed)
        done = fitting.finished(self.state_root, cell)
        if done is not None:
            return (*done, cache)
        where = paths(cfg)
        classes = load_card(where["raw"] / quadrant)["classes"]
        test = load_split(where["raw"] / quadrant, "test")
        module = new_module(cfg, regime, len(classes), cell.epochs, seed, state)
        if regime.cache_features:
            cache = cache or _cached_sets(module, train_set, val_set, test, cfg.trainer.channels_last)
            module.automatic_optimization = False  # steps a whole cached epoch per loader item
            train_data, val_data, test_data = cache
        else:
            train_data, val_data, test_data = train_set, val_set, test
        fitted = fitting.fit(cfg, cell, module, train_data, val_data, self.state_root, self.parent,
                             single_device=regime.cache_features)
        test_metrics, _ = evaluate(fitted.module, test_data, cfg.evaluate.batch_size)
        result = {"seed": seed, "val_acc": round(fitted.val_acc, 6), "best_epoch": fitted.best_epoch,
                  "epochs": cell.epochs, "steps": cfg.finetune.steps, "n_train": len(train_set),
                  "test": test_metrics, "history": fitted.history}
        if fitted.run_id is not None:
            runs.log_metrics(fitted.run_id, {f"test/{k}": v for k, v in test_metrics.items()})
            runs.log_metrics(fitted.run_id, {"best/val_acc": fitted.val_acc})
        fitting.keep_finished(self.state_root, cell, result, fitted.module, fitted.run_id)
        print(f"{cell.name}: val acc {fitted.val_acc:.3f} (epoch {fitted.best_epoch}/{cell.epochs}), "
              f"test acc {test_metrics['acc']:.3f}", flush=True)
        return result, fitted.module, cache


def _cached_sets(module: Classifier, train_set, val_set, test, channels_last: bool) -> tuple[TensorDataset, ...]:
    """The frozen part's pooled features of the training, validation and test images, once per quadrant
    (the frozen pretrained backbone is the same for every seed)."""
    backbone, cached = module.net.backbone, []
    for dataset in (train_set, val_set, ImageArrayDataset(*test)):
        features, labels = pooled_features(backbone, dataset, channels_last=channels_last)
        cached.append(TensorDataset(features[backbone.stage_names[-1]], labels))
    return tuple(cached)


def chosen_seed(results: dict[int, dict]) -> int:
    """The seed whose network is kept: best validation accuracy, the lowest seed on a tie."""
    return max(sorted(results), key=lambda seed: results[seed]["val_acc"])


def run_regime(cfg: DictConfig, regime_name: str, state_root: Path, parent: str | None) -> None:
    """The ``finetune@<regime>`` stage's work; writes models/finetune/<regime>/ when every cell is done."""
    regime = cfg.regime[regime_name]
    cells = RegimeCells(cfg, regime_name, state_root, parent)
    state = cells.starting_weights()
    side_by_side = cfg.trainer.cell_processes
    if side_by_side > 1 and not regime.cache_features:  # a head on cached features takes seconds: not worth it
        pending = [(q, seed) for q in QUADRANTS for seed in cfg.seeds if not cells.is_finished(q, seed)]
        parallel.train_cells(cells, state, pending, side_by_side)
    summary: dict[str, Any] = {"regime": regime_name, "quadrants": {}}
    networks, histories = {}, {}
    for quadrant in QUADRANTS:
        results, nets = cells.quadrant(quadrant, state)
        keep = chosen_seed(results)
        networks[quadrant] = nets[keep]
        histories[quadrant] = [{"seed": r["seed"], **row} for r in results.values() for row in r["history"]]
        summary["quadrants"][quadrant] = {"chosen_seed": keep, "seeds": {
            str(seed): {k: v for k, v in r.items() if k != "history"} for seed, r in results.items()}}
    if not runs.launched_as_global_zero():
        return
    out = paths(cfg)["models"] / "finetune" / regime_name
    with staged_dir(out) as staging:
        for quadrant, network in networks.items():
            (staging / quadrant).mkdir()
            save_model(network, staging / quadrant / "model.pt")
            write_text(staging / quadrant / HISTORY_FILE, history_csv(histories[quadrant]))
        write_json(staging / RESULTS_FILE, summary)
        save_config(cfg, staging / "config.yaml")
    fitting.clear(state_root)


def read_results(models_dir: Path, regime: str) -> dict:
    path = models_dir / "finetune" / regime / RESULTS_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: run `dvc repro finetune@{regime}` first")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- the cut sweep

CUT_SWEEP_DIR = "cut_sweep"  # models/cut_sweep/results.json


def run_cut_sweep(cfg: DictConfig, state_root: Path, parent: str | None) -> None:
    """truncate_freeze's head at every cut of ``cut_sweep.cut_at``, every seed, on each quadrant of
    ``cut_sweep.quadrants``: the layer-transferability curve (Yosinski et al., 2014). Every cut's
    features (train, val and test) come from one forward pass of the pretrained backbone."""
    regime = cfg.regime.truncate_freeze
    state = pretrained_state(cfg)
    where = paths(cfg)
    config_file = state_root / "config.yaml"
    save_config(cfg, config_file)
    summary: dict[str, Any] = {}
    cuts = list(cfg.cut_sweep.cut_at)
    for quadrant in cfg.cut_sweep.quadrants:
        classes = load_card(where["raw"] / quadrant)["classes"]
        train_set, val_set = training_sets(cfg, quadrant, materialised=True, train_per_class=cfg.finetune.train_per_class)
        backbone = build_backbone(OmegaConf.to_container(cfg.model), cfg.data.image_size)
        backbone.load_state_dict(state)
        stages = backbone.stage_names
        unknown = [c for c in cfg.cut_sweep.cut_at if c not in stages]
        if unknown:
            raise ConfigError(f"cut_sweep.cut_at: unknown stage {unknown[0]!r} of model {cfg.model.name} "
                              f"(allowed: {', '.join(stages)})")
        sets = {}
        for split, dataset in (("train", train_set), ("val", val_set),
                               ("test", ImageArrayDataset(*load_split(where["raw"] / quadrant, "test")))):
            features, labels = pooled_features(backbone, dataset, cuts, cfg.trainer.channels_last)
            sets[split] = {cut: TensorDataset(features[cut], labels) for cut in cuts}
        summary[quadrant] = {}
        for cut in cuts:
            summary[quadrant][cut] = {"seeds": {}}
            for seed in cfg.seeds:
                epochs, per_epoch = cfg.finetune.epochs, steps_per_epoch(cfg.finetune.steps, cfg.finetune.epochs)
                params = run_params(cfg, regime, quadrant, epochs, per_epoch, len(train_set), len(val_set),
                                    {"cut_at": cut})
                tags = {"stage": "cut_sweep", "quadrant": quadrant, "regime": "truncate_freeze", "seed": str(seed),
                        "cut_at": cut, "dvc.stage": "cut_sweep", **runs.data_tags(cfg, quadrant)}
                cell = fitting.Cell(name=f"{quadrant}-{cut}-s{seed}", run_name=f"cut_sweep/{quadrant}/{cut}/s{seed}",
                                    seed=seed, epochs=epochs, steps_per_epoch=per_epoch,
                                    batch_size=cfg.finetune.batch_size, tags=tags, params=params,
                                    fingerprint_of=_fingerprint(cfg, quadrant, params, tags),
                                    artifacts={"": config_file}, resumable=False)
                done = fitting.finished(state_root, cell)
                if done is None:
                    module = new_module(cfg, regime, len(classes), epochs, seed, state, cut_at=cut)
                    module.automatic_optimization = False
                    fitted = fitting.fit(cfg, cell, module, sets["train"][cut], sets["val"][cut], state_root, parent,
                                         single_device=True)
                    test_metrics, _ = evaluate(fitted.module, sets["test"][cut], cfg.evaluate.batch_size)
                    result = {"seed": seed, "val_acc": round(fitted.val_acc, 6), "best_epoch": fitted.best_epoch,
                              "epochs": epochs, "test": test_metrics}
                    if fitted.run_id is not None:
                        runs.log_metrics(fitted.run_id, {**{f"test/{k}": v for k, v in test_metrics.items()},
                                                         "best/val_acc": fitted.val_acc})
                    fitting.keep_finished(state_root, cell, result, fitted.module, fitted.run_id)
                else:
                    result = done[0]
                summary[quadrant][cut]["seeds"][str(seed)] = result
                print(f"{cell.name}: val acc {result['val_acc']:.3f}, test acc {result['test']['acc']:.3f}")
    if not runs.launched_as_global_zero():
        return
    with staged_dir(where["models"] / CUT_SWEEP_DIR) as staging:
        write_json(staging / RESULTS_FILE, {"cut_at": cuts, "quadrants": summary})
        save_config(cfg, staging / "config.yaml")
    fitting.clear(state_root)
