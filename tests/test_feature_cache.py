"""Frozen regimes trained on cached features give the same result as on images, and the loaders'
randomness is a function of (seed, epoch) alone (what makes a resumed fit exact)."""

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.data.arrays import ImageArrayDataset
from transferlab.training.feature_cache import pooled_features
from transferlab.training.loaders import EpochSampler, FitData
from transferlab.training.runner import Recipe, build_module


def fit(module, train_set, val_set, epochs=3):
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=FitData(train_set, val_set, batch_size=8, seed=0, steps_per_epoch=5))
    return {
        **{k: float(v) for k, v in trainer.callback_metrics.items()},
        "optimizer_steps": trainer.global_step,
        "train/loss": module.history[-1]["train_loss"],
    }


@pytest.mark.parametrize(
    "regime,extra",
    [
        ("freeze_all", "regime.freeze_all.head_dropout=0.3"),
        ("truncate_freeze", "regime.truncate_freeze.head_hidden=16"),
    ],
)
def test_cached_and_uncached_training_agree(repo, regime, extra):
    """Catches: a feature cache that computes something else than the frozen backbone does in training
    (train-mode BatchNorm, another cut, unpooled features), or steps a different number of times."""
    cfg = load_config("finetune", [f"regime={regime}", extra], root=repo)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 5, size=40)
    images, val_images = ImageArrayDataset(x, y), ImageArrayDataset(x[:16], y[:16])
    results = {}
    for cached in (False, True):
        L.seed_everything(0, verbose=False)
        module = build_module(cfg, Recipe.for_regime(cfg, regime), 5, epochs=3)
        train_set, val_set = images, val_images
        if cached:
            backbone = module.net.backbone
            last = backbone.stage_names[-1]
            features, labels = pooled_features(backbone, images)
            train_set = TensorDataset(features[last], labels)
            features, labels = pooled_features(backbone, val_images)
            val_set = TensorDataset(features[last], labels)
            assert train_set.tensors[0].shape == (40, backbone.out_channels)
            module.automatic_optimization = False  # a whole cached epoch per loader item
        metrics = fit(module, train_set, val_set)
        results[cached] = (module.net.head.state_dict(), metrics)
    (uncached_head, uncached_metrics), (cached_head, cached_metrics) = results[False], results[True]
    for key in uncached_head:
        torch.testing.assert_close(cached_head[key], uncached_head[key], rtol=1e-4, atol=1e-5)
    assert cached_metrics["optimizer_steps"] == uncached_metrics["optimizer_steps"] == 3 * 5
    assert cached_metrics["val/acc"] == pytest.approx(uncached_metrics["val/acc"])
    assert cached_metrics["train/loss"] == pytest.approx(uncached_metrics["train/loss"], rel=1e-4)


def test_one_forward_pass_gives_every_cut_points_features(repo):
    """Catches: the cut sweep's shared forward pass giving other features than a backbone cut at that stage."""
    cfg = load_config("finetune", ["regime=truncate_freeze"], root=repo)
    full = build_module(
        cfg, Recipe.for_regime(cfg, "truncate_freeze", cut_at="stage3"), 5, epochs=1
    ).net.backbone.eval()
    x = np.random.default_rng(1).integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    features, _ = pooled_features(full, ImageArrayDataset(x, np.zeros(6, dtype=np.int64)), ["stem", "stage2"])
    truncated = full.truncated("stage2")
    with torch.inference_mode():
        from transferlab.data.arrays import to_tensor

        direct = truncated(to_tensor(x)).mean(dim=(2, 3))
    torch.testing.assert_close(features["stage2"], direct)
    assert features["stem"].shape == (6, full.stage_channels["stem"])


def test_an_epoch_of_the_sampler_depends_on_seed_and_epoch_only():
    """Catches: an epoch's images or order that depend on what ran before (a resumed fit would differ)."""
    straight = EpochSampler(10, seed=3, items_per_epoch=7)
    epochs = []
    for epoch in range(4):
        straight.set_epoch(epoch)
        epochs.append(list(straight))
    resumed = EpochSampler(10, seed=3, items_per_epoch=7)
    resumed.set_epoch(2)
    assert list(resumed) == epochs[2]
    stream = [i for epoch in epochs for _, i in epoch]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10)), (
        "every pass covers each image exactly once"
    )
    assert all(e == epoch for epoch, items in enumerate(epochs) for e, _ in items)
    other = EpochSampler(10, seed=4, items_per_epoch=7)
    other.set_epoch(2)
    assert list(other) != epochs[2]


def test_ddp_shards_are_disjoint_and_cover_the_epoch():
    """Catches: ranks that train on the same images, or an epoch that loses some under DDP."""
    whole = EpochSampler(20, seed=0, items_per_epoch=8)
    whole.set_epoch(1)
    shards = []
    for rank in (0, 1):
        sampler = EpochSampler(20, seed=0, rank=rank, world=2, items_per_epoch=4)
        sampler.set_epoch(1)
        shards.append([i for _, i in sampler])
    assert len(shards[0]) == len(shards[1]) == 4
    assert sorted(shards[0] + shards[1]) == sorted(i for _, i in whole)


def test_cache_needs_a_frozen_backbone(repo):
    """Catches: caching features of a backbone that trains (they would be stale after one step)."""
    with pytest.raises(ConfigError, match="regime.finetune_all.cache_features=True is not allowed"):
        load_config("finetune", ["regime=finetune_all", "regime.finetune_all.cache_features=true"], root=repo)
