"""Each regime does exactly what docs/regimes.md says, built from conf/ as the pipeline builds it,
for two architectures: the default small ResNet and torchvision's resnet18."""

from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from torch.utils.data import DataLoader

from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.data.arrays import ImageArrayDataset, collate_images
from transferlab.tracking.logger import EpochMLflowLogger
from transferlab.training.callbacks import RESUME_FILE, ResumeState
from transferlab.training.runner import Recipe, build_module, pretrained_state

NUM_CLASSES = 5
MODELS = ["small_resnet", "resnet18"]
CUT = {"small_resnet": "stage2", "resnet18": "layer2"}


def module_for(repo, regime: str, *extra: str, model: str = "small_resnet", epochs: int = 2):
    """The regime's module as the finetune stage builds it (conf/regime + params.yaml + overrides)."""
    cut = (f"regime.truncate_freeze.cut_at={CUT[model]}", f"cut_sweep.cut_at=[{CUT[model]}]")
    cfg = load_config("finetune", [f"regime={regime}", f"model={model}", *cut, *extra], root=repo)
    torch.manual_seed(0)
    return cfg, build_module(cfg, Recipe.for_regime(cfg, regime), NUM_CLASSES, epochs)


def pretrained_like_state(module) -> dict[str, torch.Tensor]:
    """A 'pretrained' backbone state with non-trivial BatchNorm statistics."""
    torch.manual_seed(1)
    state = {}
    for key, value in module.net.backbone.state_dict().items():
        if key.endswith("running_var"):
            state[key] = torch.rand_like(value) + 0.5
        elif value.is_floating_point():
            state[key] = torch.randn_like(value) * 0.1
        else:
            state[key] = value.clone() + 7
    return state


class LrRecorder(Callback):
    """Each group's learning rate and the backbone's BN mode, per epoch, as training saw them."""

    def __init__(self):
        self.lrs, self.bn_training = {}, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            epoch = trainer.current_epoch
            self.lrs[epoch] = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
            self.bn_training[epoch] = {
                name: any(m.training for m in stage.modules() if isinstance(m, torch.nn.BatchNorm2d))
                for name, stage in pl_module.net.backbone.named_children()
            }


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, size=32)
    return (
        DataLoader(
            ImageArrayDataset(x, y),
            batch_size=8,
            shuffle=True,
            collate_fn=collate_images,
            generator=torch.Generator().manual_seed(0),
        ),
        DataLoader(ImageArrayDataset(x[:8], y[:8]), batch_size=8, collate_fn=collate_images),
    )


def trainer(epochs: int, *callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        callbacks=list(callbacks),
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        **kwargs,
    )


def train_briefly(module, epochs: int = 2, *callbacks) -> None:
    trainer(epochs, *callbacks).fit(module, *data())


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("regime", ["freeze_all", "truncate_freeze"])
def test_frozen_regimes_change_nothing_but_the_head(repo, regime, model):
    """Catches: a frozen weight or BatchNorm statistic that moves, a backbone optimizer group, BN in train mode."""
    cut = CUT[model]
    cfg, module = module_for(repo, regime, model=model)
    module.load_backbone(pretrained_like_state(module))
    before = snapshot(module)
    recorder = LrRecorder()
    train_briefly(module, 2, recorder)
    after = snapshot(module)
    backbone_keys = [k for k in before if k.startswith("net.backbone.")]
    assert any("running_mean" in k for k in backbone_keys) and any("num_batches_tracked" in k for k in backbone_keys)
    for key in backbone_keys:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(before[key], after[key]), f"{regime} changed frozen {key}"
    assert not torch.equal(before["net.head.fc.weight"], after["net.head.fc.weight"]), "the head must train"
    trainable = count(p for p in module.parameters() if p.requires_grad)
    assert trainable == count(module.net.head.parameters())
    assert trainable == module.net.backbone.out_channels * NUM_CLASSES + NUM_CLASSES
    assert set(recorder.lrs[0]) == {"head"} and recorder.lrs[0]["head"] == pytest.approx(cfg.regime[regime].lr)
    assert not any(recorder.bn_training[0].values())
    if regime == "truncate_freeze":
        assert module.net.backbone.stage_names[-1] == cut


@pytest.mark.parametrize("model", MODELS)
def test_truncated_backbone_loads_the_pretrained_weights_of_its_stages(repo, model):
    """Catches: a cut that keeps the wrong stages, or weights loaded into the wrong place."""
    cut = CUT[model]
    _, full = module_for(repo, "freeze_all", model=model)
    state = pretrained_like_state(full)
    _, truncated = module_for(repo, "truncate_freeze", model=model)
    truncated.load_backbone(state)
    names = full.net.backbone.stage_names
    assert truncated.net.backbone.stage_names == names[: names.index(cut) + 1]
    for key, value in truncated.net.backbone.state_dict().items():
        assert torch.equal(value, state[key])


@pytest.mark.parametrize("model", MODELS)
def test_finetune_all_trains_everything_with_named_groups_at_a_smaller_lr(repo, model):
    """Catches: one optimizer group for all weights, or the backbone at the head's learning rate."""
    cfg, module = module_for(repo, "finetune_all", model=model)
    lr = cfg.regime.finetune_all.lr
    module.load_backbone(pretrained_like_state(module))
    before = snapshot(module)
    recorder = LrRecorder()
    train_briefly(module, 2, recorder)
    stages = module.net.backbone.stage_names
    assert list(recorder.lrs[0]) == ["head", *(f"backbone.{s}" for s in stages)]
    assert cfg.regime.finetune_all.backbone_lr_factor == pytest.approx(0.1)
    for name in stages:
        assert recorder.lrs[0][f"backbone.{name}"] == pytest.approx(lr * 0.1)
    assert recorder.lrs[0]["head"] == pytest.approx(lr)
    assert count(p for p in module.parameters() if p.requires_grad) == count(module.parameters())
    after = snapshot(module)
    first_weight = next(k for k in before if k.startswith(f"net.backbone.{stages[0]}") and k.endswith("weight"))
    assert not torch.equal(before[first_weight], after[first_weight])
    assert any(not torch.equal(before[k], after[k]) for k in before if "running_mean" in k)


@pytest.mark.parametrize("model", MODELS)
def test_two_phase_finetuning_gates_the_backbone_then_unfreezes_the_top_stages(repo, model):
    """Phase 1: head only (backbone lr 0, no change at all, BN in eval); phase 2: top K stages at lr x 0.1.
    Catches: a backbone that moves in phase 1, stages below the top K that train in phase 2."""
    cfg, module = module_for(
        repo,
        "finetune_all",
        "regime.finetune_all.head_epochs=2",
        "regime.finetune_all.unfreeze_top=2",
        model=model,
        epochs=4,
    )
    lr = cfg.regime.finetune_all.lr
    module.load_backbone(pretrained_like_state(module))
    start = snapshot(module)
    recorder = LrRecorder()
    phase1 = trainer(2, recorder)
    phase1.fit(module, *data())
    after_phase1 = snapshot(module)
    for key in start:
        if key.startswith("net.backbone."):
            assert torch.equal(start[key], after_phase1[key]), f"phase 1 changed {key}"
    stages = module.net.backbone.stage_names
    top, rest = stages[-2:], stages[:-2]
    for epoch in (0, 1):
        assert all(recorder.lrs[epoch][f"backbone.{s}"] == 0.0 for s in stages)
        assert recorder.lrs[epoch]["head"] > 0 and not any(recorder.bn_training[epoch].values())

    recorder2 = LrRecorder()
    trainer(4, recorder2).fit(module, *data())  # continues: epochs 2 and 3 are phase 2
    cosine = lambda e: 0.5 * (1 + np.cos(np.pi * e / 4))  # noqa: E731
    for epoch in (2, 3):
        lrs = recorder2.lrs[epoch]
        assert lrs["head"] == pytest.approx(lr * cosine(epoch))
        for s in top:
            assert lrs[f"backbone.{s}"] == pytest.approx(lr * 0.1 * cosine(epoch))
            assert recorder2.bn_training[epoch][s]
        for s in rest:
            assert lrs[f"backbone.{s}"] == 0.0 and not recorder2.bn_training[epoch][s]
    final = snapshot(module)
    for key in start:
        if any(key.startswith(f"net.backbone.{s}.") for s in rest):
            assert torch.equal(start[key], final[key]), f"a stage below the top {len(top)} changed: {key}"
    assert any(not torch.equal(start[k], final[k]) for k in start if k.startswith(f"net.backbone.{top[-1]}."))


@pytest.mark.parametrize("model", MODELS)
def test_phase_and_learning_rates_survive_resume_from_a_checkpoint(repo, tmp_path, model):
    """Catches: a resumed fit that restarts phase 1 or the cosine schedule."""
    extra = ("regime.finetune_all.head_epochs=2",)
    cfg, module = module_for(repo, "finetune_all", *extra, model=model, epochs=4)
    lr = cfg.regime.finetune_all.lr
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, filename="last", save_top_k=-1, every_n_epochs=1, enable_version_counter=False
    )
    trainer(1, checkpoint).fit(module, *data())  # stopped inside phase 1
    _, fresh = module_for(repo, "finetune_all", *extra, model=model, epochs=4)
    recorder = LrRecorder()
    trainer(4, recorder).fit(fresh, *data(), ckpt_path=str(tmp_path / "last.ckpt"))
    assert sorted(recorder.lrs) == [1, 2, 3]
    cosine = lambda e: 0.5 * (1 + np.cos(np.pi * e / 4))  # noqa: E731
    stages = fresh.net.backbone.stage_names
    for epoch in (1, 2, 3):
        lrs = recorder.lrs[epoch]
        assert set(lrs) == {"head", *(f"backbone.{s}" for s in stages)}
        assert lrs["head"] == pytest.approx(lr * cosine(epoch))
        for s in stages:  # epoch 1: still phase 1 after resume; from epoch 2 (head_epochs) phase 2
            expected = 0.0 if epoch < 2 else lr * 0.1 * cosine(epoch)
            assert lrs[f"backbone.{s}"] == pytest.approx(expected), (epoch, s)


class Killed(Exception):
    """Stands for a SIGKILL at a chosen point of an epoch."""


class KillAfterResumeState(Checkpoint):
    """Runs right after ResumeState (Lightning calls checkpoint callbacks last, in list order)."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            raise Killed


class KillBeforeResumeState(Callback):
    """Runs before the module's and ResumeState's epoch end: the epoch's val metrics are written."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise Killed


def tracked_fit(repo, tmp_path, uri: str, run_id: str, *callbacks, resumed: bool = False) -> None:
    _, module = module_for(repo, "finetune_all", epochs=3)
    logger = EpochMLflowLogger(tracking_uri=uri, run_id=run_id, resumed=resumed)
    resume = tmp_path / RESUME_FILE
    L.Trainer(
        max_epochs=3,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        callbacks=[ResumeState(tmp_path), *callbacks],
    ).fit(module, *data(), ckpt_path=str(resume) if resumed else None, weights_only=False)


@pytest.mark.parametrize("kill", [KillAfterResumeState, KillBeforeResumeState])
def test_a_fit_killed_anywhere_in_an_epoch_logs_each_epochs_metrics_once(repo, tmp_path, mlflow_db, kill):
    """Catches: an epoch's train metrics lost because the resume checkpoint was written before them
    (a kill in between; the resumed fit starts at the next epoch), and an epoch logged twice when a
    kill before the checkpoint makes the resumed fit redo it."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{mlflow_db}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())).info.run_id
    with pytest.raises(Killed):
        tracked_fit(repo, tmp_path, uri, run_id, kill())
    tracked_fit(repo, tmp_path, uri, run_id, resumed=True)
    for metric in ("train/loss", "train/acc", "val/acc", "lr/head"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, metric))
        assert steps == [1, 2, 3], f"{metric}: {steps}"


def test_plateau_ends_phase_one_early_and_is_saved_in_the_checkpoint(repo):
    """Catches: a plateau that never ends phase 1, or a phase switch lost on resume."""
    extra = ("regime.finetune_all.head_epochs=5", "regime.finetune_all.plateau_patience=1")
    cfg, module = module_for(repo, "finetune_all", *extra, epochs=6)
    recorder = LrRecorder()
    # A learning rate of ~0 for the head keeps val/acc flat, so phase 1 must end at the plateau.
    module.hparams.lr = 1e-12
    trainer(4, recorder).fit(module, *data())
    assert module.plan.phase2_from < 5
    assert recorder.lrs[module.plan.phase2_from]["backbone.stem"] > 0
    checkpoint: dict[str, Any] = {}
    module.on_save_checkpoint(checkpoint)
    _, other = module_for(repo, "finetune_all", *extra, epochs=6)
    other.on_load_checkpoint(checkpoint)
    assert other.plan.phase2_from == module.plan.phase2_from


def test_scratch_starts_from_random_weights_and_its_alternative_from_pretrained(repo, tmp_path):
    """Catches: scratch reading pretrained weights, or its backbone at a different rate than the head."""
    cfg, module = module_for(repo, "scratch")
    assert cfg.regime.scratch.init == "random"
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert all(g["lr"] == pytest.approx(cfg.regime.scratch.lr) for g in groups)
    assert count(p for p in module.parameters() if p.requires_grad) == count(module.parameters())
    alternative, _ = module_for(repo, "scratch", "regime.scratch.init=pretrained")
    assert alternative.regime.scratch.init == "pretrained"
    alternative.paths.models = str(tmp_path / "no-models-here")
    with pytest.raises(ConfigError, match="meta.json not found"):
        pretrained_state(alternative)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("regime", ["freeze_all", "truncate_freeze", "finetune_all", "scratch"])
def test_head_is_sized_to_the_target_classes(repo, regime, model):
    """Catches: a head sized to the source's classes."""
    _, module = module_for(repo, regime, model=model)
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, NUM_CLASSES)


def test_mlp_head_option(repo):
    """Catches: head_hidden ignored."""
    _, module = module_for(repo, "freeze_all", "regime.freeze_all.head_hidden=32")
    assert module.net.head.hidden[0].out_features == 32 and module.net.head.fc.in_features == 32
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ("regime.finetune_all.head_epochs=8",),
            "regime.finetune_all.head_epochs=8 is not allowed (allowed: 0..7: fewer than finetune.epochs (8))",
        ),
        (
            ("regime.finetune_all.unfreeze_top=9",),
            "regime.finetune_all.unfreeze_top=9 is not allowed (allowed: null or 1..4, the stages kept)",
        ),
    ],
)
def test_bad_phase_settings_are_clear_errors(repo, extra, message):
    """Catches: impossible phase settings accepted silently (checked once, with the config)."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        module_for(repo, "finetune_all", "finetune.epochs=8", *extra, epochs=8)


def test_frozen_backbone_stays_in_eval_mode_when_training(repo):
    """Catches: module.train() putting frozen BatchNorm layers in train mode."""
    _, module = module_for(repo, "freeze_all")
    module.train()
    assert module.training and module.net.head.training
    assert not any(m.training for m in module.net.backbone.modules())
