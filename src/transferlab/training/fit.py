"""One tracked, resumable fit: a ``Cell`` (one network trained on one dataset with one seed).

Resumable state lives in the stage's scratch folder (``.transferlab/state/<stage>/<cell>/``,
ignored by git and DVC, which deletes a stage's outputs before running it):

- ``cell.json``: the cell's fingerprint (a hash of everything that decides its result) and
  its MLflow run id; state with another fingerprint is discarded, never resumed;
- ``last.ckpt``: the full training state after the last completed epoch (``ResumeState``);
- ``best.ckpt``: the best validation checkpoint so far;
- ``result.json`` + ``model.pt`` once the cell is done (a stage killed later skips it).

A fit started again after a kill continues from ``last.ckpt`` into the same MLflow run and
ends bit-identical to an uninterrupted one: everything random is drawn from (seed, epoch)
(``training.loaders``, ``EpochSeed`` below), not from how far this process got.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint

from transferlab.core.errors import Interrupted
from transferlab.core.files import write_json
from transferlab.core.names import seed_words
from transferlab.tracking import runs
from transferlab.tracking.logger import EpochMLflowLogger
from transferlab.tracking.store import tracking_uri
from transferlab.training.callbacks import RESUME_FILE, ResumeState, progress_callbacks
from transferlab.training.loaders import FitData
from transferlab.training.module import Classifier, load_model, save_model
from transferlab.training.trainer import quiet_lightning, trainer_settings

BEST = "best"  # -> best.ckpt (no "=" in the name: MLflow rejects it)


@dataclass
class Cell:
    """What to train and how to track it."""

    name: str  # unique within the stage, e.g. small_similar-finetune_all-s0
    run_name: str  # the MLflow run's name, e.g. finetune/small_similar/finetune_all/s0
    seed: int
    epochs: int
    steps_per_epoch: int | None  # optimizer steps per epoch (None: one pass over the data); validated after each
    batch_size: int
    tags: dict[str, str]  # stage, quadrant, regime, seed, dvc.stage, ...
    params: dict[str, Any]  # the run's params: this cell's own knobs, each once
    fingerprint_of: dict[str, Any]  # everything that decides the result (hashed)
    artifacts: dict[str, Path] = field(default_factory=dict)
    resumable: bool = True  # False: a head on cached features, faster to redo than to checkpoint

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint_of, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Fitted:
    module: Classifier  # the best-validation network
    val_acc: float
    best_epoch: int
    history: list[dict[str, float]]
    run_id: str | None  # None on DDP ranks other than 0


class EpochSeed(L.Callback):
    """Seed torch, numpy and random from (seed, epoch) at every epoch start (dropout, anything else
    random in a step), so a resumed epoch draws what the uninterrupted run drew."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        words = np.random.SeedSequence(seed_words(self.seed, trainer.current_epoch, "step")).generate_state(1)
        L.seed_everything(int(words[0]), workers=True, verbose=False)


def seed_everything(seed: int | None) -> None:
    if seed is not None:  # seed=0 must still seed
        L.seed_everything(seed, workers=True, verbose=False)


def cell_state(state_root: Path, cell: Cell) -> tuple[Path, dict]:
    """The cell's scratch folder and its recorded state, wiped if it belongs to other inputs."""
    folder = state_root / cell.name
    record_file = folder / "cell.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    if not runs.launched_as_global_zero():  # under DDP only global rank 0 writes; the others read
        return folder, record
    if record.get("fingerprint") != cell.fingerprint:
        shutil.rmtree(folder, ignore_errors=True)
        record = {"fingerprint": cell.fingerprint}
    folder.mkdir(parents=True, exist_ok=True)
    write_json(record_file, record)
    return folder, record


def finished(state_root: Path, cell: Cell) -> tuple[dict, Classifier, str | None] | None:
    """(result, model, MLflow run id) of a cell this stage finished before it was stopped, or None."""
    folder, record = cell_state(state_root, cell)
    if (folder / "result.json").is_file() and (folder / "model.pt").is_file():
        return json.loads((folder / "result.json").read_text()), load_model(folder / "model.pt"), record.get("run_id")
    return None


def keep_finished(state_root: Path, cell: Cell, result: dict, module: Classifier, run_id: str | None) -> None:
    """Keep a finished cell's result and network (a stage stopped later skips the cell); tag its run
    with the network's sha256, which is how ``evaluate`` finds the run of a model file."""
    if not runs.launched_as_global_zero():
        return
    folder = state_root / cell.name
    save_model(module, folder / "model.pt")
    write_json(folder / "result.json", result)
    if run_id is not None:
        from transferlab.training.budget import file_sha256

        runs.set_tags(run_id, {"model.sha256": file_sha256(folder / "model.pt")})


def _open_run(record: dict, record_file: Path, cell: Cell, experiment: str, parent: str | None) -> str:
    run_id = record.get("run_id")
    if run_id and cell.resumable and runs.run_status(run_id) is not None:
        return runs.resume_run(run_id, parent)
    run_id = runs.start_run(experiment, cell.run_name, cell.tags, cell.params, parent, cell.seed, cell.artifacts)
    write_json(record_file, {**record, "run_id": run_id})
    return run_id


def fit(
    cfg,
    cell: Cell,
    module: Classifier,
    train_set,
    val_set,
    state_root: Path,
    parent: str | None,
    single_device: bool = False,
    callbacks: list[L.Callback] | None = None,
) -> Fitted:
    """Train ``module`` (resuming the cell's saved state if any), tracked in one MLflow run; ``callbacks``
    join the fit's own (e.g. a search's pruning)."""
    quiet_lightning()
    folder, record = cell_state(state_root, cell)
    global_zero = runs.launched_as_global_zero()
    run_id = (
        _open_run(record, folder / "cell.json", cell, cfg.tracking.experiment_name, parent) if global_zero else None
    )
    resume = folder / RESUME_FILE
    if not cell.resumable:
        resume.unlink(missing_ok=True)
    logger = EpochMLflowLogger(
        experiment_name=cfg.tracking.experiment_name,
        tracking_uri=tracking_uri(),
        run_id=run_id,
        buffered=not cell.resumable,
        resumed=resume.is_file(),
    )
    best = ModelCheckpoint(
        dirpath=folder,
        filename=BEST,
        monitor="val/acc",
        mode="max",
        save_top_k=1,
        save_weights_only=True,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )
    own = [best, EpochSeed(cell.seed), *progress_callbacks(cell.name), *(callbacks or [])]
    if cell.resumable:
        own.append(ResumeState(folder))
    kwargs = trainer_settings(cfg.trainer, module, single_device)
    trainer: L.Trainer = instantiate(
        {"_target_": "lightning.pytorch.Trainer", **kwargs},
        max_epochs=cell.epochs,
        logger=logger,
        callbacks=own,
        default_root_dir=str(folder),
        enable_progress_bar=any(type(c).__name__ == "RichProgressBar" for c in own),
    )
    trainer.fit(
        module,
        datamodule=FitData(train_set, val_set, cell.batch_size, cell.seed, cell.steps_per_epoch),
        ckpt_path=str(resume) if resume.is_file() else None,
        weights_only=False,
    )  # our own files
    if trainer.received_sigterm:  # Lightning stopped gracefully before our handler could: still a stop
        raise Interrupted(signal.SIGTERM)
    if run_id is not None:
        runs.set_tags(run_id, {"val_samples": str(module.last_val_samples), "best_epoch": str(_best_epoch(best))})
        runs.finish_run(run_id)  # the run's duration is the training's
    fitted = Classifier.load_from_checkpoint(best.best_model_path, map_location="cpu", weights_only=False)
    fitted.history = module.history
    return Fitted(fitted.eval(), float(best.best_model_score), _best_epoch(best), module.history, run_id)


def _best_epoch(checkpoint: ModelCheckpoint) -> int:
    state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=False)
    return int(state["epoch"]) + 1


def clear(state_root: Path) -> None:
    """Forget a stage's resumable state once its outputs are in place."""
    shutil.rmtree(state_root, ignore_errors=True)
