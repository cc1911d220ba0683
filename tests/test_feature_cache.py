"""Frozen regimes trained on cached features give the same result as on images."""

import lightning as L
import numpy as np
import pytest
import torch

from transferlab.config import ConfigError, load_config
from transferlab.data import ImageArrayDataset
from transferlab.finetune import build_module
from transferlab.training import cached_training_sets, loaders


def fit(module, train_set, val_set, epochs=3):
    train, val = loaders(train_set, val_set, batch_size=8, seed=0)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", deterministic=True)
    trainer.fit(module, train, val)
    return {**{k: float(v) for k, v in trainer.callback_metrics.items()}, "optimizer_steps": trainer.global_step}


@pytest.mark.parametrize("regime,quadrant,extra", [
    ("freeze_all", "small_similar", "quadrants.small_similar.head_dropout=0.3"),
    ("truncate_freeze", "small_different", "quadrants.small_different.head_hidden=16"),
])
def test_cached_and_uncached_training_agree(repo, regime, quadrant, extra):
    cfg = load_config("finetune", [f"quadrant={quadrant}", f"regime={regime}", extra], root=repo)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, size=(40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 5, size=40)
    images, val_images = ImageArrayDataset(x, y), ImageArrayDataset(x[:16], y[:16])
    results = {}
    for cached in (False, True):
        L.seed_everything(0, verbose=False)
        module = build_module(cfg, 5)
        train_set, val_set = images, val_images
        if cached:
            train_set, val_set = cached_training_sets(module, images, val_images)
            assert train_set.tensors[0].shape == (40, module.net.backbone.out_channels)
            assert not module.automatic_optimization  # a whole cached epoch per loader item
        metrics = fit(module, train_set, val_set)
        results[cached] = (module.net.head.state_dict(), metrics)
    (uncached_head, uncached_metrics), (cached_head, cached_metrics) = results[False], results[True]
    for key in uncached_head:
        torch.testing.assert_close(cached_head[key], uncached_head[key], rtol=1e-4, atol=1e-5)
    assert cached_metrics["optimizer_steps"] == uncached_metrics["optimizer_steps"] == 3 * 40 // 8
    assert cached_metrics["val/acc"] == pytest.approx(uncached_metrics["val/acc"])
    assert cached_metrics["train/loss"] == pytest.approx(uncached_metrics["train/loss"], rel=1e-4)


def test_cache_needs_a_frozen_backbone(repo):
    with pytest.raises(ConfigError, match="quadrants.large_similar.cache_features=true is not allowed: regime "
                                          "finetune_all trains its backbone"):
        load_config("finetune", ["quadrant=large_similar", "quadrants.large_similar.cache_features=true"], root=repo)
