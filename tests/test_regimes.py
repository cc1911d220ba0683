"""Each regime does exactly what DESIGN.md §2 says, built from conf/ as the pipeline builds it."""

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from transferlab.config import load_config
from transferlab.data import ImageArrayDataset
from transferlab.finetune import build_module

NUM_CLASSES = 5


def module_for(repo, regime: str, quadrant: str = "small_similar", *extra: str):
    cfg = load_config("finetune", [f"quadrant={quadrant}", f"regime={regime}", *extra], root=repo)
    torch.manual_seed(0)
    module = build_module(cfg, NUM_CLASSES)
    return cfg, module


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


def train_briefly(module, epochs: int = 2) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(32, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, NUM_CLASSES, size=32)
    loader = DataLoader(ImageArrayDataset(x, y), batch_size=8, shuffle=True)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(module, loader, DataLoader(ImageArrayDataset(x[:8], y[:8]), batch_size=8))


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("regime,quadrant", [("freeze_all", "small_similar"), ("truncate_freeze", "small_different")])
def test_frozen_regimes_change_nothing_but_the_head(repo, regime, quadrant):
    cfg, module = module_for(repo, regime, quadrant)
    module.load_backbone(pretrained_like_state(module))
    before = snapshot(module)
    train_briefly(module)
    after = snapshot(module)
    backbone_keys = [k for k in before if k.startswith("net.backbone.")]
    assert any("running_mean" in k for k in backbone_keys) and any("num_batches_tracked" in k for k in backbone_keys)
    for key in backbone_keys:  # weights and BatchNorm statistics, bit for bit
        assert torch.equal(before[key], after[key]), f"{regime} changed frozen {key}"
    assert not torch.equal(before["net.head.fc.weight"], after["net.head.fc.weight"]), "the head must train"
    trainable = count(p for p in module.parameters() if p.requires_grad)
    assert trainable == count(module.net.head.parameters())
    assert trainable == module.net.backbone.out_channels * NUM_CLASSES + NUM_CLASSES


def test_truncate_freeze_keeps_only_the_stages_up_to_cut_at(repo):
    cfg, module = module_for(repo, "truncate_freeze", "small_different", "quadrants.small_different.cut_at=block2")
    assert module.net.backbone.stage_names == ["block1", "block2"]
    assert module.net.head.fc.in_features == 64
    _, full = module_for(repo, "freeze_all")
    assert full.net.backbone.stage_names == ["block1", "block2", "block3", "block4"]
    assert full.net.head.fc.in_features == 256


def test_truncated_backbone_loads_the_pretrained_weights_of_its_stages(repo):
    _, full = module_for(repo, "freeze_all")
    state = pretrained_like_state(full)
    _, cut = module_for(repo, "truncate_freeze", "small_different", "quadrants.small_different.cut_at=block2")
    cut.load_backbone(state)
    for key, value in cut.net.backbone.state_dict().items():
        assert torch.equal(value, state[key])


def test_finetune_all_trains_everything_with_a_smaller_backbone_lr(repo):
    cfg, module = module_for(repo, "finetune_all", "large_similar")
    module.load_backbone(pretrained_like_state(module))
    before = snapshot(module)
    groups = {g["name"]: g for g in module.configure_optimizers()["optimizer"].param_groups}
    assert groups["head"]["lr"] == pytest.approx(cfg.train.lr)
    assert groups["backbone"]["lr"] == pytest.approx(cfg.train.lr * cfg.regime.backbone_lr_factor)
    assert cfg.regime.backbone_lr_factor == pytest.approx(0.1)
    assert count(p for p in module.parameters() if p.requires_grad) == count(module.parameters())
    train_briefly(module)
    after = snapshot(module)
    assert not torch.equal(before["net.backbone.block1.0.weight"], after["net.backbone.block1.0.weight"])
    assert not torch.equal(before["net.backbone.block1.1.running_mean"], after["net.backbone.block1.1.running_mean"])


def test_scratch_starts_from_random_weights_and_trains_everything(repo):
    cfg, module = module_for(repo, "scratch", "large_different")
    assert cfg.regime.init == "random"
    from transferlab.finetune import pretrained_state

    assert pretrained_state(cfg) is None  # never reads the pretrained checkpoint
    groups = {g["name"]: g["lr"] for g in module.configure_optimizers()["optimizer"].param_groups}
    assert groups == {"head": pytest.approx(cfg.train.lr), "backbone": pytest.approx(cfg.train.lr)}
    assert count(p for p in module.parameters() if p.requires_grad) == count(module.parameters())


@pytest.mark.parametrize("regime", ["freeze_all", "truncate_freeze", "finetune_all", "scratch"])
def test_head_is_sized_to_the_target_classes(repo, regime):
    _, module = module_for(repo, regime, "small_different")
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, NUM_CLASSES)


def test_frozen_backbone_stays_in_eval_mode_when_training(repo):
    _, module = module_for(repo, "freeze_all")
    module.train()
    assert module.training and module.net.head.training
    assert not any(m.training for m in module.net.backbone.modules())
